"""The real corpus (2,000 messages of a public mailing list): counts, searches whose answers
are worked out here with the standard library alone, and no plaintext of subjects or
senders anywhere under the home, while the application is open and after it closed."""

from __future__ import annotations

import gzip
import mailbox
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

import pytest

from eventpile.domain.operation import Operation
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.query import parse_query, search
from eventpile.store.home import Home
from tests.conftest import CORPUS, PASSPHRASE

pytestmark = pytest.mark.corpus
MESSAGES = 2000


@dataclass(frozen=True)
class Mail:
    """One message as the standard library reads it."""

    message_id: str
    subject: str
    sender: str
    address: str
    sent: datetime | None


def _text(value: object) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError):
        return str(value)


def _sent(value: object) -> datetime | None:
    try:
        sent = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return sent.replace(tzinfo=UTC) if sent.tzinfo is None else sent


def tokens(text: str) -> list[str]:
    """Words as the full-text index splits them (letters, digits and ``_``, as notmuch)."""
    return re.findall(r"\w+", text.lower())


def has_phrase(text: str, phrase: str) -> bool:
    want, have = tokens(phrase), tokens(text)
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


@pytest.fixture(scope="module")
def mails(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Mail]]:
    """The corpus decompressed to a temporary mbox, and its messages read with ``mailbox``."""
    if not CORPUS.exists():
        pytest.skip(f"real corpus {CORPUS} not present (it lives in ../shared/data)")
    path = tmp_path_factory.mktemp("corpus") / "linux-mips.mbox"
    with gzip.open(CORPUS) as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    found = []
    for message in mailbox.mbox(path):
        sender = _text(message.get("From", ""))
        found.append(
            Mail(
                message_id="".join(str(message.get("Message-ID", "")).split()).strip("<>"),
                subject=" ".join(_text(message.get("Subject", "")).split()),
                sender=sender,
                address=parseaddr(sender)[1].lower(),
                sent=_sent(message.get("Date", "")),
            )
        )
    return path, found


@dataclass
class Imported:
    app: MailApplication
    home: Home
    first: Operation
    again: Operation


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, mails: tuple[Path, list[Mail]]
) -> Iterator[Imported]:
    home = Home(tmp_path_factory.mktemp("corpus-home") / "home")
    app = MailApplication(home, home.init(PASSPHRASE))
    first = app.execute(ImportMailbox(path=mails[0]))
    again = app.execute(ImportMailbox(path=CORPUS))  # the gzipped original: all known
    state = Imported(app, home, first, again)
    yield state
    state.app.close()


def total(app: MailApplication, query: str) -> int:
    return int(search(app.view("messages").db, parse_query(query), 1)["total"])


def test_every_message_is_read_once_and_duplicates_are_skipped(
    imported: Imported, mails: tuple[Path, list[Mail]]
) -> None:
    found = mails[1]
    assert len(found) == MESSAGES
    distinct = len({m.message_id for m in found})
    first = imported.first.result
    assert first["indexed"] + first["skipped"] + first["failed"] == MESSAGES
    assert (first["indexed"], first["skipped"], first["failed"]) == (
        distinct,
        MESSAGES - distinct,
        0,
    )
    again = imported.again.result
    assert (again["indexed"], again["skipped"], again["failed"]) == (0, MESSAGES, 0)
    assert total(imported.app, "") == distinct


def test_searches_match_what_the_standard_library_finds(
    imported: Imported, mails: tuple[Path, list[Mail]]
) -> None:
    found = mails[1]
    addresses = sorted({m.address for m in found if m.address})
    busiest = max(addresses, key=lambda a: sum(m.address == a for m in found))
    expected = {
        f'from:"{busiest}"': sum(has_phrase(m.sender, busiest) for m in found),
        "subject:mips": sum("mips" in tokens(m.subject) for m in found),
        "subject:patch": sum("patch" in tokens(m.subject) for m in found),
        'subject:"pci"': sum("pci" in tokens(m.subject) for m in found),
    }
    for query, count in expected.items():
        assert count > 0 and total(imported.app, query) == count, query
    dated = [m.sent for m in found if m.sent is not None]
    low, high = sorted(dated)[len(dated) // 3], sorted(dated)[2 * len(dated) // 3]
    after, before = f"{low:%Y-%m-%d}", f"{high:%Y-%m-%d}"
    start = datetime.strptime(after, "%Y-%m-%d").replace(tzinfo=UTC)
    end = datetime.strptime(before, "%Y-%m-%d").replace(tzinfo=UTC)
    in_range = sum(start <= d < end for d in dated)
    assert 0 < in_range == total(imported.app, f"after:{after} before:{before}")
    subject_in_range = sum(
        "mips" in tokens(m.subject) and m.sent is not None and start <= m.sent < end for m in found
    )
    assert total(imported.app, f"subject:mips after:{after} before:{before}") == subject_in_range


def test_tagging_what_a_search_found(imported: Imported) -> None:
    query = "subject:mips"
    tagged = imported.app.execute(TagMessages(action="add", tag="mips", query=query))
    assert tagged.result["changed"] == total(imported.app, query) == total(imported.app, "tag:mips")


def _sample(mails: list[Mail]) -> list[bytes]:
    """About 50 subjects and 50 sender addresses, spread over the corpus."""
    subjects = [m.subject for m in mails if len(m.subject) >= 12][::37][:50]
    addresses = sorted({m.address for m in mails if "@" in m.address})[::3][:50]
    assert len(subjects) >= 40 and len(addresses) >= 40
    return [s.encode() for s in (*subjects, *addresses)]


def _plaintext_under(home: Path, sample: list[bytes]) -> dict[str, list[bytes]]:
    """Which of ``sample`` appear in which file (every file, -wal and -shm included)."""
    found: dict[str, list[bytes]] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [s for s in sample if s in data or s.lower() in data]
        if hits:
            found[str(path.relative_to(home))] = hits
    return found


def test_no_subject_or_sender_in_plaintext_anywhere_under_the_home(
    imported: Imported, mails: tuple[Path, list[Mail]]
) -> None:
    raw = mails[0].read_bytes()
    sample = [s for s in _sample(mails[1]) if s in raw]  # as they are in the mailbox file
    assert len(sample) >= 80
    files = {p.name for p in imported.home.path.rglob("*") if p.is_file()}
    assert {"events.sqlite3", "keys.json", "messages.db", "operations.db"} <= files
    assert _plaintext_under(imported.home.path, sample) == {}  # live, write-ahead logs too
    imported.app.close()
    assert _plaintext_under(imported.home.path, sample) == {}  # after close
    reopened = MailApplication(imported.home, imported.home.unlock(PASSPHRASE))
    imported.app = reopened
    assert total(reopened, "") == len({m.message_id for m in mails[1]})
