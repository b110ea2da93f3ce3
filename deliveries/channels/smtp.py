"""The SMTP client of the fast path: one relay connection, RFC 2920 pipelining, outcomes per message.

A relay sits across a network: every reply costs a round trip. Where the relay advertises
PIPELINING, the envelope (MAIL, RCPT, DATA) of a message goes in one write and its three replies
are read together, then the content goes with its final dot: two round trips per message instead
of four. A failed transaction is reset with an RSET sent in the same write as the next envelope.

Outcomes keep the engine's semantics (DESIGN.md, "The send pipeline"):
- a reply to the recipient (or the content) classifies the failure (DOMAIN.md §5);
- a connection lost before the content went out, or a 421 ("service not available, closing"),
  says nothing about the message: `RelayUnavailable` is raised and the message goes to another
  connection (never a failure);
- a connection lost after the content went out, before its reply, leaves the message "unknown"
  (the relay may have accepted it): never resent automatically.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass

from .base import Outcome
from .classify import classify

CRLF = b"\r\n"
_LEADING_DOT = re.compile(rb"(?m)^\.")


class RelayUnavailable(Exception):
    """The relay cannot take this message on this connection now (refused, 421, connection lost
    before the content went out). The message is untouched: send it on another connection."""


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    use_ssl: bool = False
    use_tls: bool = False
    user: str = ""
    password: str = ""
    timeout: float = 30.0
    verify: bool = True
    cafile: str = ""

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_settings(cls) -> RelayConfig:
        from django.conf import settings

        return cls(
            host=settings.EMAIL_HOST,
            port=int(settings.EMAIL_PORT),
            use_ssl=bool(settings.EMAIL_USE_SSL),
            use_tls=bool(settings.EMAIL_USE_TLS),
            user=settings.EMAIL_HOST_USER or "",
            password=settings.EMAIL_HOST_PASSWORD or "",
            timeout=float(getattr(settings, "EMAIL_TIMEOUT", 30) or 30),
            verify=bool(getattr(settings, "EMAIL_SSL_VERIFY", True)),
            cafile=getattr(settings, "EMAIL_SSL_CAFILE", "") or "",
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile or None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def refused(code: int, reply, *, quarantine: bool = True) -> Outcome:
    text = _text(reply)
    failure_type, reason = classify(code, text)
    return Outcome(ok=False, code=code, text=f"{code} {text}".strip()[:1000], failure_type=failure_type,
                   failure_reason=reason, quarantine=quarantine)  # fmt: skip


def unknown_outcome(error: BaseException) -> Outcome:
    return Outcome(
        ok=False, code=0, unknown=True, quarantine=False,
        text=f"Connection lost after the message was sent, before the relay's reply ({error}): it may or may not have been delivered.",
    )  # fmt: skip


class _Client:
    """smtplib's client, plus a transaction that pipelines when the relay allows it."""

    pipelining = False
    content_sent = False  # the current message's content (with its final dot) was written
    _needs_rset = False  # the last transaction failed midway: reset before the next one

    def connect_relay(self, relay: RelayConfig) -> None:
        self.ehlo()
        if relay.use_tls:
            self.starttls(context=relay.ssl_context())
            self.ehlo()
        if relay.user:
            self.login(relay.user, relay.password)
        self.pipelining = self.has_extn("pipelining")

    def _reply(self) -> tuple[int, bytes]:
        code, text = self.getreply()
        if code == 421:  # the relay closes the connection: it took nothing
            self.close()
            raise RelayUnavailable(f"{code} {_text(text)}")
        return code, text

    def transaction(self, mail_from: str, to: str, data: bytes) -> Outcome:
        """Send one message to one recipient. Returns its outcome; raises RelayUnavailable when the
        message should go on another connection. OSError/SMTPException from the socket propagate
        with `content_sent` telling whether the message's content had gone out."""
        self.content_sent = False
        if not (mail_from.isascii() and to.isascii()):
            return self._transaction_utf8(mail_from, to, data)
        envelope = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (mail_from.encode(), to.encode())
        if not self.pipelining:
            return self._transaction_plain(envelope, data)
        rset = b"RSET\r\n" if self._needs_rset else b""
        self.send(rset + envelope + b"DATA\r\n")
        if rset:
            self._reply()
            self._needs_rset = False
        mail, rcpt, start = self._reply(), self._reply(), self._reply()
        if mail[0] != 250 or rcpt[0] not in (250, 251) or start[0] != 354:
            if start[0] == 354:  # a relay that opened DATA anyway: send an empty message to close it
                self._content_next = False
                self.send(b".\r\n")
                self._reply()
            self._needs_rset = True
            if mail[0] != 250:  # the sender was refused: nothing about the recipient's address
                return refused(*mail, quarantine=False)
            return refused(*(rcpt if rcpt[0] not in (250, 251) else start))
        return self._content(data)

    def _transaction_plain(self, envelope: bytes, data: bytes) -> Outcome:
        if self._needs_rset:
            self.send(b"RSET\r\n")
            self._reply()
            self._needs_rset = False
        mail_cmd, rcpt_cmd = envelope.split(CRLF)[:2]
        self.send(mail_cmd + CRLF)
        code, text = self._reply()
        if code != 250:
            self._needs_rset = True
            return refused(code, text, quarantine=False)
        self.send(rcpt_cmd + CRLF)
        code, text = self._reply()
        if code not in (250, 251):
            self._needs_rset = True
            return refused(code, text)
        self.send(b"DATA\r\n")
        code, text = self._reply()
        if code != 354:
            self._needs_rset = True
            return refused(code, text)
        return self._content(data)

    def _content(self, data: bytes) -> Outcome:
        body = _LEADING_DOT.sub(b"..", data)
        if not body.endswith(CRLF):
            body += CRLF
        self.send(body + b".\r\n")
        self.content_sent = True
        code, text = self._reply()
        if code != 250:
            return refused(code, text)
        return Outcome(ok=True)

    def _transaction_utf8(self, mail_from: str, to: str, data: bytes) -> Outcome:
        """An internationalized address (RFC 6531): only through a relay that offers SMTPUTF8."""
        if not self.has_extn("smtputf8"):
            return Outcome(ok=False, code=0, failure_type="hard", failure_reason="user_unknown", quarantine=False,
                           text="The address is not plain ASCII and the relay does not offer SMTPUTF8: it cannot be sent there.")  # fmt: skip
        try:
            self.sendmail(mail_from, [to], data, mail_options=["SMTPUTF8"])
        except smtplib.SMTPRecipientsRefused as e:
            return refused(*next(iter(e.recipients.values())))
        except smtplib.SMTPSenderRefused as e:
            return refused(e.smtp_code, e.smtp_error, quarantine=False)
        except smtplib.SMTPDataError as e:
            return refused(e.smtp_code, e.smtp_error)
        return Outcome(ok=True)

    # smtplib's own sendmail marks where the content starts (354), for the UTF-8 path.
    def getreply(self):
        code, text = super().getreply()
        if code == 354:
            self._content_next = True
        return code, text

    _content_next = False

    def send(self, s):
        super().send(s)
        if self._content_next:
            self._content_next, self.content_sent = False, True


class RelayClient(_Client, smtplib.SMTP):
    pass


class RelayClientSSL(_Client, smtplib.SMTP_SSL):
    pass


def relay_open(relay: RelayConfig):
    """A connected, greeted (and, as configured, encrypted and authenticated) client.

    Raises RelayUnavailable when the relay cannot be reached or refuses the connection (connection
    refused, a 421 greeting, too many connections), and smtplib.SMTPAuthenticationError or
    ssl.SSLError for a configuration the relay does not accept."""
    try:
        if relay.use_ssl:
            client = RelayClientSSL(relay.host, relay.port, timeout=relay.timeout, context=relay.ssl_context())
        else:
            client = RelayClient(relay.host, relay.port, timeout=relay.timeout)
    except smtplib.SMTPConnectError as e:
        raise RelayUnavailable(f"{e.smtp_code} {_text(e.smtp_error)}") from e
    except (OSError, smtplib.SMTPServerDisconnected) as e:  # refused, reset, timed out, no route
        raise RelayUnavailable(str(e) or type(e).__name__) from e
    try:
        client.connect_relay(relay)
    except RelayUnavailable:
        client.close()
        raise
    except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as e:
        client.close()
        raise RelayUnavailable(str(e) or type(e).__name__) from e
    except BaseException:
        client.close()
        raise
    return client


def relay_close(client) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError, RelayUnavailable):
        client.close()
