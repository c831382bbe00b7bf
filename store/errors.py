"""Errors of the store a person can act on; the CLI prints them as one line."""


class StoreError(Exception):
    """Base class: the message is the whole story, no traceback needed."""


class WrongPassphrase(StoreError):
    pass


class TamperedData(StoreError):
    """A ciphertext failed authentication: changed, truncated or moved to another row."""


class NotInitialised(StoreError):
    pass


class UnknownEvent(StoreError):
    """An authentic stored event whose class this program does not have."""


class DamagedView(StoreError):
    """A view's file does not open with the key that opened the log: it is made anew."""
