"""The mail application's tags against a plain model of what a user expects
(:class:`eventpile.mail.testing.TagLaws`), on SQLite and PostgreSQL.

Under the ``ci`` profile a few hundred steps; under ``long``
(``HYPOTHESIS_PROFILE=long``) more than 10,000 on each backend.
"""

from __future__ import annotations

from hypothesis import settings

from eventpile.mail.testing import TagLaws
from eventpile.testing.postgres import on_postgres

LONG = settings.default.max_examples > 100  # the ``long`` profile

TestTagLaws = TagLaws.TestCase
TestTagLaws.settings = settings(
    max_examples=250 if LONG else 15,
    stateful_step_count=50 if LONG else 25,
    deadline=None,
)


TestTagLawsOnPostgres = on_postgres(
    TagLaws, settings(TestTagLaws.settings, max_examples=250 if LONG else 4)
)
