"""Sending mail over SMTP: a real network operation with retries and a question.

The server is configured by the environment, read when the operation runs (so a
password is never recorded): ``EVENTPILE_SMTP`` (``host:port``),
``EVENTPILE_SMTP_STARTTLS=1``, ``EVENTPILE_SMTP_USER`` and
``EVENTPILE_SMTP_PASSWORD``. A connection failure or a 4xx reply is retried with
back-off; a 5xx reply asks the user whether to try again or give up.

What is recorded when: the operation, before a byte leaves (a process that dies is
found by its lease); then, right before the message is handed over (SMTP ``DATA``),
that the attempt is *in doubt*: from there until the server's answer is read, the
mail may have been delivered or not, and SMTP cannot tell afterwards. An attempt
that stops in that window (Ctrl-C, TERM, a lost connection, a killed process taken
up after its lease) asks the user whether to send it again (with the same
Message-ID and Date, so that receivers can tell the copies apart) or to mark it
sent; it never sends again by itself. A ``250`` is a delivery, whatever happens
after it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, Field

from eventpile import (
    Command,
    Context,
    Outcome,
    Private,
    Renderer,
    Retryable,
    RetryPolicy,
    handles,
    utcnow,
)

SMTP_TIMEOUT_S = 30.0


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line")
    return value


def _address(value: str) -> str:
    found = getaddresses([_one_line(value)])
    if len(found) != 1:
        raise ValueError(f"{value!r} is not one mail address (give each its own --to)")
    address = found[0][1]
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c.isspace() for c in address):
        raise ValueError(f"{value!r} is not a mail address")
    return value.strip()


Address = Annotated[str, AfterValidator(_address)]


class SendMailRenderer(Renderer):
    """Mail entries name their recipients, when private data is asked for."""

    def headline(self, entry: dict[str, Any]) -> str:
        private = entry.get("private")
        if private is None:
            return super().headline(entry)
        to = ", ".join(private["private_args"].get("to", []))
        return f"{entry['message']}: {private['private_args'].get('subject', '')!r} to {to}"


class SendMail(Command):
    """Deliver one composed message over SMTP (retried; it cannot be undone)."""

    undoable: ClassVar[bool] = False
    retry: ClassVar[RetryPolicy | None] = RetryPolicy(max_attempts=8, base_s=60.0)
    renderer: ClassVar[Renderer] = SendMailRenderer()
    outside_effects: ClassVar[bool] = True

    sender: Annotated[Address, Private]
    to: Annotated[tuple[Address, ...], Field(min_length=1), Private]
    subject: Annotated[str, AfterValidator(_one_line), Private]
    body: Annotated[str, Private]
    message_id: Annotated[str, AfterValidator(_one_line), Private]
    composed_at: AwareDatetime

    def describe(self) -> str:
        n = len(self.to)
        return f"Send a message to {n} recipient{'s' if n != 1 else ''}"

    @classmethod
    def compose(cls, sender: str, to: list[str], subject: str, body: str) -> SendMail:
        """A new message (its Message-ID and date fixed now, so retries send the same)."""
        domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        return cls(
            sender=sender,
            to=tuple(to),
            subject=subject,
            body=body,
            message_id=make_msgid(domain=domain),
            composed_at=utcnow(),
        )

    def message(self) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message["Subject"] = self.subject
        message["Date"] = format_datetime(self.composed_at)
        message["Message-ID"] = self.message_id
        message.set_content(self.body)
        return message


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    starttls: bool = False
    user: str = ""
    password: str = ""

    @classmethod
    def from_env(cls) -> SmtpConfig:
        where = os.environ.get("EVENTPILE_SMTP", "")
        host, _, port = where.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"set EVENTPILE_SMTP to the mail server's host:port (not {where!r})")
        return cls(
            host=host.strip("[]"),
            port=int(port),
            starttls=os.environ.get("EVENTPILE_SMTP_STARTTLS", "") in ("1", "true", "yes"),
            user=os.environ.get("EVENTPILE_SMTP_USER", ""),
            password=os.environ.get("EVENTPILE_SMTP_PASSWORD", ""),
        )


class DeliveryDeferred(Retryable):
    """The server could not be reached, or answered 4xx: try again later."""


class DeliveryInDoubt(Exception):
    """The message was handed over and the server's answer was lost."""


class DeliveryRefused(Exception):
    """The server answered 5xx: trying again as is will not help."""

    def __init__(self, code: int, reply: str):
        super().__init__(f"{code} {reply}")
        self.code = code


def deliver(
    config: SmtpConfig, message: EmailMessage, handing_over: Callable[[], None]
) -> dict[str, Any]:
    """Send ``message``; the recipients refused (while others were accepted).

    ``handing_over`` is called right before the message is handed over (``DATA``):
    from then on, until the server's answer, the delivery is in doubt. Raises
    :class:`DeliveryDeferred` or :class:`DeliveryRefused` (the server's answer, or no
    connection), :class:`DeliveryInDoubt` (the answer lost). The connection is closed
    without ``QUIT`` when anything goes wrong: its reply could be read as the answer
    to another command (a late ``250`` read as a refusal of ``QUIT``).
    """
    import smtplib
    import ssl

    class _Smtp(smtplib.SMTP):
        def data(self, msg: Any) -> tuple[int, bytes]:
            handing_over()
            try:
                return super().data(msg)
            except smtplib.SMTPResponseException:
                raise  # the server answered: not in doubt
            except OSError as e:  # disconnected, timed out: the answer is lost
                raise DeliveryInDoubt(f"{type(e).__name__}: {e}") from e

    smtp: _Smtp | None = None
    try:
        smtp = _Smtp(config.host, config.port, timeout=SMTP_TIMEOUT_S)
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.user:
            smtp.login(config.user, config.password)
        refused = dict(smtp.send_message(message))
        with contextlib.suppress(OSError):  # delivered: a QUIT that fails changes nothing
            smtp.quit()
    except smtplib.SMTPRecipientsRefused as e:
        code, reply = min(e.recipients.values())
        raise _by_code(code, reply) from e
    except smtplib.SMTPResponseException as e:
        raise _by_code(e.smtp_code, e.smtp_error) from e
    except (smtplib.SMTPNotSupportedError, ssl.SSLError):
        raise  # a configuration problem: retrying will not help
    except OSError as e:  # refused, unreachable, timed out, disconnected before DATA
        raise DeliveryDeferred(f"{type(e).__name__}: {e}") from e
    finally:
        if smtp is not None:
            smtp.close()
    return refused


def _by_code(code: int, reply: bytes | str) -> Exception:
    """A refusal (5xx) or a deferral (4xx, or a reply that is neither)."""
    if 500 <= code < 600:
        return DeliveryRefused(code, _text(reply))
    return DeliveryDeferred(f"{code} {_text(reply)}")


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


IN_DOUBT = (
    "The mail may have gone out before the attempt stopped (the server's answer was not "
    "read). Send it again (the same Message-ID and Date: receivers can tell the copies "
    "apart), or mark it sent?"
)


class MarkSent(Command):
    """The user's word that a mail in doubt was delivered."""

    undoable: ClassVar[bool] = False

    def describe(self) -> str:
        return "Mark a mail sent"


@handles(MarkSent)
def mark_sent(command: MarkSent, ctx: Context) -> Outcome:
    return Outcome("Marked sent, as you said", {"delivered": True, "marked": True})


@handles(SendMail)
def send_mail(command: SendMail, ctx: Context) -> Outcome:
    config = SmtpConfig.from_env()
    choices: dict[str, Command | None] = {"send-again": command, "mark-sent": MarkSent()}

    def handing_over() -> None:
        ctx.in_doubt(IN_DOUBT, choices)

    try:
        refused = deliver(config, command.message(), handing_over)
    except DeliveryInDoubt as lost:
        ctx.ask(IN_DOUBT, choices, detail=str(lost))
        return Outcome("In doubt: the server's answer was lost", {"delivered": None})
    except DeliveryRefused as refusal:
        ctx.ask(
            f"The mail server refused the message ({refusal.code}). Try again, or cancel?",
            {"retry": command, "cancel": None},
            detail=str(refusal),
        )
        return Outcome(
            f"Not sent: the server refused it ({refusal.code})",
            {"delivered": False, "code": refusal.code},
        )
    accepted = len(command.to) - len(refused)
    return Outcome(
        f"Sent to {accepted} of {len(command.to)} recipients" if refused else "Sent",
        {"delivered": True, "accepted": accepted, "refused": len(refused)},
        {"refused": {k: [v[0], _text(v[1])] for k, v in refused.items()}},
    )
