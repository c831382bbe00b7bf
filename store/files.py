"""What the store does to make a file's replacement durable."""

from __future__ import annotations

import os


def sync_directory(directory: str | os.PathLike[str]) -> None:
    """Sync ``directory``: a file created, renamed or replaced in it is there after a crash."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
