"""Sending mail: a real SMTP server (aiosmtpd) on loopback, down then up, deferring,
refusing; retries, the question a refusal asks, login, and the ``send`` command."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from eventpile.commands.operations import answer
from eventpile.commands.worker import Worker
from eventpile.domain.operation import Status
from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.mail.send import SendMail
from eventpile.store.home import Home
from tests.test_operations import Clock

pytest_plugins = ["tests.test_operations"]  # its fixtures: clock, ops_app

USER, PASSWORD = "postmaster", "letmein"


class Inbox:
    """An aiosmtpd handler: replies as told, keeps what it accepts."""

    def __init__(self) -> None:
        self.reply = "250 OK"
        self.refuse: set[str] = set()
        self.received: list[Any] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply.startswith("250"):
            self.received.append(message_from_bytes(envelope.content))
        return self.reply


class Server:
    """An SMTP server on a loopback port, started and stopped at will."""

    def __init__(self, port: int, **options: Any):
        self.port = port
        self.inbox = Inbox()
        self.options = options
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, **self.options
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server on a free port, named by EVENTPILE_SMTP, not yet started."""
    server = Server(free_port())
    monkeypatch.setenv("EVENTPILE_SMTP", f"127.0.0.1:{server.port}")
    yield server
    server.stop()


def mail(*to: str) -> SendMail:
    return SendMail.compose(
        "Alice <alice@example.org>", list(to or ["bob@example.org"]), "Hi", "Hello, Bob.\n"
    )


def test_server_down_then_up_delivers_exactly_once(
    ops_app: MailApplication, clock: Clock, smtp: Server
) -> None:
    command = mail()
    op = ops_app.execute(command)
    assert (op.status, op.attempts, op.error_type) == (Status.RETRYING, 1, "DeliveryDeferred")
    assert op.error is not None and "ConnectionRefusedError" in op.error
    worker = Worker(ops_app)
    assert worker.drain() == []  # the retry is not due yet
    clock.past(op.retry_at)
    [second] = worker.drain()  # still down
    assert second.status == "retrying"
    smtp.start()
    retry_at = ops_app.load(type(op), op.id).retry_at  # type: ignore[union-attr]
    clock.past(retry_at)
    [third] = worker.drain()
    assert third.status == "complete"
    clock.advance(days=1)
    assert worker.drain() == []
    [received] = smtp.inbox.received
    assert (received["Message-ID"], received["Subject"], received["To"]) == (
        command.message_id,
        "Hi",
        "bob@example.org",
    )
    assert received.get_payload().strip() == "Hello, Bob."
    final = ops_app.load(type(op), op.id)
    assert final is not None and (final.status, final.attempts, final.result) == (
        Status.COMPLETE,
        3,
        {"delivered": True, "accepted": 1, "refused": 0},
    )


def test_a_4xx_reply_is_retried(ops_app: MailApplication, clock: Clock, smtp: Server) -> None:
    smtp.start()
    smtp.inbox.reply = "451 4.3.0 try again later"
    op = ops_app.execute(mail())
    assert (op.status, op.error) == (Status.RETRYING, "451 4.3.0 try again later")
    smtp.inbox.reply = "250 OK"
    clock.past(op.retry_at)
    assert [r.status for r in Worker(ops_app).drain()] == ["complete"]
    assert len(smtp.inbox.received) == 1


@pytest.mark.parametrize("refusal", ["data", "recipient"])
def test_a_5xx_reply_asks_whether_to_try_again(
    ops_app: MailApplication, smtp: Server, refusal: str
) -> None:
    smtp.start()
    if refusal == "data":
        smtp.inbox.reply = "554 5.7.1 message rejected"
    else:
        smtp.inbox.refuse = {"bob@example.org"}
    op = ops_app.execute(mail())
    assert op.status is Status.WAITING and op.question is not None
    assert list(op.question.choices) == ["retry", "cancel"]
    assert op.question.prompt.startswith("The mail server refused the message (5")
    assert "bob@example.org" not in op.question.prompt  # the reply is private detail
    assert op.question.detail.startswith(("554 5.7.1", "550 5.1.1"))
    assert op.result["delivered"] is False
    smtp.inbox.reply, smtp.inbox.refuse = "250 OK", set()
    answered, follow_up = answer(ops_app, op.id, "retry")
    assert answered.status is Status.COMPLETE
    assert follow_up is not None and (follow_up.status, follow_up.parent_id) == (
        Status.COMPLETE,
        op.id,
    )
    assert len(smtp.inbox.received) == 1


def test_cancelling_a_refused_message_sends_nothing(ops_app: MailApplication, smtp: Server) -> None:
    smtp.start()
    smtp.inbox.reply = "554 5.7.1 message rejected"
    op = ops_app.execute(mail())
    answered, follow_up = answer(ops_app, op.id, "cancel")
    assert (answered.status, follow_up, smtp.inbox.received) == (Status.CANCELLED, None, [])


def test_recipients_refused_among_others_are_reported(
    ops_app: MailApplication, smtp: Server
) -> None:
    smtp.start()
    smtp.inbox.refuse = {"carol@example.org"}
    op = ops_app.execute(mail("bob@example.org", "carol@example.org"))
    assert (op.status, op.message, op.result) == (
        Status.COMPLETE,
        "Sent to 1 of 2 recipients",
        {"delivered": True, "accepted": 1, "refused": 1},
    )
    assert op.private_result == {"refused": {"carol@example.org": [550, "5.1.1 no such user here"]}}


class Accounts:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False)  # the server replies 235 or 535


@pytest.mark.parametrize("password", [PASSWORD, "wrong"])
def test_login_when_configured(
    ops_app: MailApplication, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    server = Server(free_port(), authenticator=Accounts(), auth_require_tls=False)
    monkeypatch.setenv("EVENTPILE_SMTP", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("EVENTPILE_SMTP_USER", USER)
    monkeypatch.setenv("EVENTPILE_SMTP_PASSWORD", password)
    server.start()
    try:
        op = ops_app.execute(mail())
    finally:
        server.stop()
    if password == PASSWORD:
        assert op.status is Status.COMPLETE and len(server.inbox.received) == 1
    else:
        assert op.status is Status.WAITING and "(535)" in op.question.prompt  # type: ignore[union-attr]
    assert password not in json.dumps([e.model_dump(mode="json") for _, e in ops_app.all_events()])


@pytest.mark.parametrize(
    "bad",
    [
        {"to": ["not an address"]},
        {"to": []},
        {"subject": "two\nlines"},
    ],
)
def test_a_message_that_is_not_valid_is_refused(bad: dict[str, Any]) -> None:
    from pydantic import ValidationError

    fields = {"sender": "a@example.org", "to": ["b@example.org"], "subject": "s", "body": "b"}
    with pytest.raises(ValidationError):
        SendMail.compose(**{**fields, **bad})


# the command line -----------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.fixture
def body(tmp_path: Path) -> Path:
    path = tmp_path / "body.txt"
    path.write_text("Hello from the command line.\n")
    return path


def test_send_from_the_command_line(
    cli_env: Home, smtp: Server, body: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["init"], capsys)[0] == 0
    smtp.start()
    argv = ["send", "--to", "bob@example.org", "--subject", "CLI", "--body-file", str(body)]
    code, data, _ = run([*argv, "--from", "alice@example.org"], capsys)
    assert code == 0 and data["operation"]["status"] == "complete"
    assert "bob@example.org" not in json.dumps(data)  # only public data is printed
    [received] = smtp.inbox.received
    assert (received["From"], received["Subject"]) == ("alice@example.org", "CLI")
    code, data, _ = run([*argv, "--after", "10"], capsys)
    assert (code, data["operation"]["status"]) == (0, "scheduled")
    code, data, _ = run(["ops"], capsys)
    assert [op["status"] for op in data["operations"]] == ["scheduled"]


@pytest.mark.parametrize(
    ("argv", "env", "error"),
    [
        (["--to", "nobody"], {}, "not a mail address"),
        (["--to", "bob@example.org"], {"EVENTPILE_SMTP": ""}, "set EVENTPILE_SMTP"),
        (["--to", "bob@example.org", "--subject", "a\nb"], {}, "single line"),
        (["--to", "bob@example.org\nBcc: eve@example.org"], {}, "single line"),
        (["--to", "bob@example.org, eve@example.org"], {}, "not one mail address"),
    ],
)
def test_bad_send_arguments_write_nothing(
    cli_env: Home,
    smtp: Server,
    body: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    error: str,
) -> None:
    assert run(["init"], capsys)[0] == 0
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    subject = [] if "--subject" in argv else ["--subject", "s"]
    code, data, err = run(["send", *argv, *subject, "--body-file", str(body)], capsys)
    assert (code, data) == (1, None)
    assert error in err and err.count("\n") == 1
    code, data, _ = run(["log"], capsys)
    assert data["operations"] == []


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_starttls_and_login_when_configured(
    ops_app: MailApplication, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = Server(free_port(), tls_context=tls, require_starttls=True, authenticator=Accounts())
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this server only
    monkeypatch.setenv("EVENTPILE_SMTP", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("EVENTPILE_SMTP_STARTTLS", "1")
    monkeypatch.setenv("EVENTPILE_SMTP_USER", USER)
    monkeypatch.setenv("EVENTPILE_SMTP_PASSWORD", PASSWORD)
    server.start()
    try:
        op = ops_app.execute(mail())
    finally:
        server.stop()
    assert op.status is Status.COMPLETE and len(server.inbox.received) == 1


def test_starttls_the_server_lacks_fails_without_retrying(
    ops_app: MailApplication, smtp: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventpile.commands.dispatcher import CommandFailed

    monkeypatch.setenv("EVENTPILE_SMTP_STARTTLS", "1")
    smtp.start()
    with pytest.raises(CommandFailed, match="STARTTLS"):
        ops_app.execute(mail())
    assert smtp.inbox.received == []
