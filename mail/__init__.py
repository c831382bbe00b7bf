"""The mail application: messages, tags, the message index, sending and the ``eventpile``
command, built on eventpile's public API alone (as ``examples/contacts`` is)."""
