"""Application code built on eventpile's public API only (not installed with it)."""
