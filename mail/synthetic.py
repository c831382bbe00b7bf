"""A seeded generator of realistic synthetic mail (raw RFC 5322 bytes) and mbox files.

The output depends on the seed only: dates are spread over two years from a fixed base date.
"""

import base64
import binascii
import html
import random
import unicodedata
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

BASE_DATE = datetime(2023, 1, 2, 8, 0, tzinfo=UTC)
SPAN = timedelta(days=730)
SENDERS = 200


def _split(text: str) -> tuple[str, ...]:
    """The words of a whitespace-separated literal."""
    return tuple(text.split())


_FIRST_NAMES = _split(
    "Alice Bob Carol David Erin Frank Grace Heidi Ivan Judy Karl Laura Mallory Niaj Olivia Peggy "
    "Quentin Rupert Sybil Trent Ursula Victor Walter Xavier Yvonne Zoe Hannah Omar Priya Tomasz "
    "José Zoë Björn Łukasz Søren Chloé François Jürgen Małgorzata Ólafur Renée Dvořák Ольга 王伟"
)
_LAST_NAMES = _split(
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans Walker "
    "White Roberts Green Hall Wood Jackson Clarke Patel Kowalski Novak Fischer Rossi Tanaka "
    "Müller Sørensen García Nuñez Lefèvre Østergaard Šimek Ibáñez Kuznetsova Lindqvist"
)
_DOMAINS = _split(
    "example.org example.com example.net mail.example.org lists.example.net dev.example.com "
    "corp.example kernel.example university.example.edu"
)
_LISTS = (
    ("Dev List", "dev@lists.example.org"),
    ("Users", "users@lists.example.net"),
    ("Release Team", "release@example.com"),
)
_AREAS = _split("net mm sched docs build storage auth ui sync crypto search index cli api tests")
_WORDS = _split(
    "the a to of and in is it that for on with as this be are not by or have we can will if "
    "patch change commit build test release branch merge review driver kernel module memory cache "
    "buffer queue thread lock timer interrupt device network socket packet server client request "
    "response error warning failure crash leak race fix update support add remove rename refactor "
    "cleanup config option default value index table column record event stream log file path "
    "directory disk storage backup restore user account password token session mail message "
    "inbox thread folder search filter rule attachment header body draft send receive sync "
    "meeting agenda notes plan schedule deadline estimate budget team project milestone roadmap "
    "performance latency throughput benchmark profile regression slow fast small large simple "
    "question answer idea proposal problem issue bug report feature request thanks please maybe "
    "tomorrow today yesterday week month soon later again still already only also just really"
)
_LATIN1_WORDS = _split("café naïve déjà façade señor crème smörgåsbord über Größe résumé")
_UTF8_WORDS = (*_LATIN1_WORDS, "日本語", "€", "—", "Ωmega", "привет", "✓")
_SUMMARIES = (
    "fix race in {w} {w}",
    "add {w} support for {w}",
    "remove unused {w} {w}",
    "handle {w} {w} errors",
    "rework {w} {w} handling",
    "document {w} {w}",
    "speed up {w} {w}",
)
_TOPICS = (
    "Question about {w} {w}",
    "Meeting notes: {w} {w}",
    "Proposal: {w} {w} for {w}",
    "Problem with {w} {w}",
    "{w} {w} status update",
    "Help needed with {w}",
)
_NON_ASCII_TOPICS = ("Café meeting — résumé", "Größenänderung der {w}", "日本語 {w} test")
_MAILERS = ("Mutt/2.2.9", "Thunderbird/115.6.0", "Evolution 3.48.4", "git-send-email 2.43.0")


@dataclass(frozen=True, slots=True)
class _Sender:
    header: str  # the From field value, RFC 2047 encoded where needed
    name: str
    addr: str
    tz: timezone
    mailer: str


@dataclass(frozen=True, slots=True)
class _Sent:
    message_id: str
    subject: str  # without "Re: "
    references: tuple[str, ...]
    sender_name: str


def synthetic_messages(count: int, seed: int = 0) -> Iterator[bytes]:
    """Yield `count` raw RFC 5322 messages, the same ones for the same seed."""
    for _envelope, raw in _generate(count, seed):
        yield raw


def write_mbox(path: Path, count: int, seed: int = 0) -> Path:
    """Write `count` synthetic messages to an mbox file and return its path."""
    path = Path(path)
    with path.open("wb") as f:
        for envelope, raw in _generate(count, seed):
            f.write(envelope + raw + b"\n")
    return path


def _generate(count: int, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """Yield (From_ line, raw message) pairs; no body line ever starts with "From "."""
    rng = random.Random(seed)
    senders = _senders(rng)
    recent: deque[_Sent] = deque(maxlen=200)
    series: list[str] = []  # subjects of the patches still to send in the current series
    cover: _Sent | None = None  # the cover letter the patches of the series reply to
    sender = senders[0]
    for i in range(count):
        when = BASE_DATE + SPAN * ((i + rng.random()) / count)
        starts_series = reply = False
        if series:
            subject, parent = series.pop(0), cover
        elif recent and rng.random() < 0.35:
            sender, parent, reply = rng.choice(senders), rng.choice(recent), True
            subject = parent.subject
        else:
            sender, parent, subject = rng.choice(senders), None, _subject(rng)
            if rng.random() < 0.08:
                series, starts_series = _patch_series(rng), True
                subject = series.pop(0)
        domain = sender.addr.partition("@")[2]
        message_id = f"{when:%Y%m%d%H%M%S}.{i:06d}.{seed}.{rng.getrandbits(32):08x}@{domain}"
        references = (*parent.references[-9:], parent.message_id) if parent else ()
        sent = _Sent(message_id, subject, references, sender.name)
        recent.append(sent)
        if starts_series:
            cover = sent
        shown = f"Re: {subject}" if reply else subject
        headers = _headers(rng, sender, senders, when, shown, message_id, references)
        patch = parent is not None and not reply  # a patch of the series in progress
        body = _body(rng, sender, parent if reply else None, when, patch)
        envelope = f"From {sender.addr} {when.astimezone(UTC):%a %b %d %H:%M:%S %Y}\n"
        yield envelope.encode(), headers + _mime(rng, body)


def _senders(rng: random.Random) -> list[_Sender]:
    names = [f"{first} {last}" for first in _FIRST_NAMES for last in _LAST_NAMES]
    senders = []
    for n, name in enumerate(rng.sample(names, SENDERS)):
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        local = ".".join(part.lower() for part in ascii_name.split() if part.isalnum())
        addr = f"{local or f'user{n}'}@{rng.choice(_DOMAINS)}"
        if name.isascii():
            header = formataddr((name, addr))
        elif rng.random() < 0.5 and _encodable(name, "iso-8859-1"):
            header = f"{Header(name, 'iso-8859-1').encode()} <{addr}>"
        else:
            header = formataddr((name, addr), charset="utf-8")
        tz = timezone(timedelta(minutes=30 * rng.randint(-16, 22)))
        senders.append(_Sender(header, name, addr, tz, rng.choice(_MAILERS)))
    return senders


def _encodable(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _fill(rng: random.Random, template: str) -> str:
    while "{w}" in template:
        template = template.replace("{w}", rng.choice(_WORDS[20:]), 1)
    return template


def _subject(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return _fill(rng, rng.choice(_NON_ASCII_TOPICS))
    return _fill(rng, rng.choice(_TOPICS))


def _patch_series(rng: random.Random) -> list[str]:
    """Subjects of a patch series: the cover letter, then patches 1/n .. n/n."""
    n = rng.randint(2, 6)
    version = rng.choice(("", "", " v2", " v3"))
    area = rng.choice(_AREAS)
    return [
        f"[PATCH{version} {k}/{n}] {area}: {_fill(rng, rng.choice(_SUMMARIES))}"
        for k in range(n + 1)
    ]


def _headers(
    rng: random.Random,
    sender: _Sender,
    senders: list[_Sender],
    when: datetime,
    subject: str,
    message_id: str,
    references: tuple[str, ...],
) -> bytes:
    list_name, list_addr = rng.choice(_LISTS)
    domain = sender.addr.partition("@")[2]
    local = when.astimezone(sender.tz)
    lines = [
        f"Received: from mail.{domain} (mail.{domain} [192.0.2.{rng.randint(1, 254)}])",
        f"\tby mx.example.org with ESMTPS id {rng.getrandbits(48):012x};",
        f"\t{format_datetime(local + timedelta(seconds=rng.randint(1, 90)))}",
        f"From: {sender.header}",
        f"To: {formataddr((list_name, list_addr))}",
    ]
    if rng.random() < 0.3:
        cc = rng.sample(senders, rng.randint(1, 3))
        lines.append("Cc: " + ",\n ".join(other.header for other in cc))
    if subject.isascii():
        lines.append(f"Subject: {subject}")
    else:
        lines.append(f"Subject: {Header(subject, 'utf-8', header_name='Subject').encode()}")
    lines += [f"Date: {format_datetime(local)}", f"Message-ID: <{message_id}>"]
    if references:
        lines.append(f"In-Reply-To: <{references[-1]}>")
        lines.append("References: " + "\n ".join(f"<{ref}>" for ref in references))
    lines += [
        f"User-Agent: {sender.mailer}",
        f"List-Id: {list_name} <{list_addr.replace('@', '.')}>",
        "MIME-Version: 1.0",
    ]
    return ("\n".join(lines) + "\n").encode()


def _sentence(rng: random.Random, words: Sequence[str]) -> str:
    text = " ".join(rng.choices(words, k=rng.randint(4, 12)))
    return text[0].upper() + text[1:] + rng.choice((".", ".", ",", "?", "!", ""))


def _body(
    rng: random.Random, sender: _Sender, quoted: _Sent | None, when: datetime, patch: bool
) -> tuple[list[str], str]:
    """Body lines (quoting the message replied to, if any) and the charset they need."""
    charset = rng.choices(("us-ascii", "utf-8", "iso-8859-1"), weights=(5, 10, 3))[0]
    extra = {"us-ascii": (), "utf-8": _UTF8_WORDS, "iso-8859-1": _LATIN1_WORDS}[charset]
    words = _WORDS + extra
    lines = []
    if quoted:
        earlier = format_datetime(when - timedelta(hours=3))
        lines.append(f"On {earlier}, {quoted.sender_name} wrote:")
        lines += [f"> {_sentence(rng, _WORDS)}" for _ in range(rng.randint(2, 6))]
        lines.append("")
    lines += [_sentence(rng, words) for _ in range(rng.randint(5, 40))]
    if patch:
        name = f"src/{rng.choice(_AREAS)}/{rng.choice(_WORDS[20:])}.c"
        lines += [
            "",
            f"Signed-off-by: {sender.name} <{sender.addr}>",
            "---",
            f" {name} | 3 ++-",
            " 1 file changed, 2 insertions(+), 1 deletion(-)",
            "",
            f"diff --git a/{name} b/{name}",
            f"@@ -{rng.randint(1, 900)},3 +{rng.randint(1, 900)},4 @@",
            "-\treturn 0;",
            "+\tif (!ok)",
            "+\t\treturn -EINVAL;",
        ]
    lines += ["", "-- ", sender.name]
    # Names need not fit the charset picked for the words.
    return lines, charset if _encodable("\n".join(lines), charset) else "utf-8"


def _mime(rng: random.Random, body: tuple[list[str], str]) -> bytes:
    """The Content-* fields, blank line and encoded body."""
    lines, charset = body
    text = "\n".join(lines) + "\n"
    choice = rng.random()
    if choice < 0.15:
        boundary = f"=_{rng.getrandbits(64):016x}"
        paragraphs = "".join(f"<p>{html.escape(line)}</p>\n" for line in lines if line)
        markup = f"<html><body>\n{paragraphs}</body></html>\n"
        return (
            f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n'
            f"This is a multi-part message in MIME format.\n--{boundary}\n".encode()
            + _part(rng, "text/plain", text, charset)
            + f"\n--{boundary}\n".encode()
            + _part(rng, "text/html", markup, charset)
            + f"\n--{boundary}--\n".encode()
        )
    if choice < 0.18:
        markup = (
            "<html><body>" + "<br>\n".join(html.escape(line) for line in lines) + "</body></html>"
        )
        return _part(rng, "text/html", markup + "\n", charset)
    return _part(rng, "text/plain", text, charset)


def _part(rng: random.Random, ctype: str, text: str, charset: str) -> bytes:
    """Content-Type and Content-Transfer-Encoding fields, blank line, encoded content."""
    data = text.encode(charset)
    if data.isascii() and rng.random() < 0.8:
        encoding, payload = "7bit", data
    else:
        encoding = rng.choice(("8bit", "quoted-printable", "base64"))
        if encoding == "quoted-printable":
            payload = binascii.b2a_qp(data)
        elif encoding == "base64":
            payload = base64.encodebytes(data)
        else:
            payload = data
    head = f"Content-Type: {ctype}; charset={charset}\nContent-Transfer-Encoding: {encoding}\n\n"
    return head.encode() + payload
