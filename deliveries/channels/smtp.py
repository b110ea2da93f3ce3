"""The SMTP client of the fast path: asyncio, RFC 2920 pipelining, one outcome per message.

A relay sits across a network: every reply costs a round trip. A worker process keeps many
connections busy at once from ONE event-loop thread (DESIGN.md: coroutines cost a fraction of a
thread per connection, and nothing contends for the GIL but the batch's own database thread).
Where the relay advertises PIPELINING, a message's envelope (MAIL, RCPT, DATA) goes in one write
and its three replies are read together, then the content goes with its final dot: two round
trips per message instead of four. A failed transaction is reset by an RSET written with the next
envelope. STARTTLS, implicit TLS (smtps) and AUTH (PLAIN, LOGIN) as EMAIL_URL says.

Outcomes keep the engine's semantics (DESIGN.md, "The send pipeline"):
- a reply about the recipient (or the content) is classified (DOMAIN.md §5);
- no connection, a 421 ("service not available, closing"), or a connection lost before the
  content went out say nothing about the message: `RelayUnavailable`, and the message goes on
  another connection (never a failure);
- a connection lost after the content went out, before its reply, leaves the message "unknown"
  (the relay may have accepted it): never resent automatically.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass

from .base import Outcome
from .classify import classify

CRLF = b"\r\n"
_LEADING_DOT = re.compile(rb"(?m)^\.")


class RelayUnavailable(Exception):
    """The relay cannot take this message on this connection now (no connection, 421, connection
    lost before the content went out). The message is untouched: send it on another connection."""


class RelayRefusedUs(Exception):
    """The relay refuses our configuration (TLS not offered, login refused): every connection
    would fail the same way. Counts as unreachable for the send; the text says what to fix."""


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
        text=f"Connection lost after the message was sent, before the relay's reply ({error or type(error).__name__}): "
        "it may or may not have been delivered.",
    )  # fmt: skip


def dot_stuffed(data: bytes) -> bytes:
    """The content as it goes after DATA: leading dots doubled, CRLF-terminated, then the final dot."""
    body = _LEADING_DOT.sub(b"..", data) if (b"\n." in data or data.startswith(b".")) else data
    if not body.endswith(CRLF):
        body += CRLF
    return body + b".\r\n"


class AsyncRelayClient:
    """One connection to the relay, used by one coroutine at a time."""

    content_sent = False  # the current message's content (with its final dot) was written

    def __init__(self, relay: RelayConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.relay, self.reader, self.writer = relay, reader, writer
        self.features: set[str] = set()
        self.pipelining = False
        self._needs_rset = False

    @classmethod
    async def open(cls, relay: RelayConfig) -> AsyncRelayClient:
        """A greeted, (as configured) encrypted and authenticated connection. Raises RelayUnavailable
        when the relay cannot take one now, RelayRefusedUs when it refuses our configuration."""
        try:
            async with asyncio.timeout(relay.timeout):
                if relay.use_ssl:
                    reader, writer = await asyncio.open_connection(relay.host, relay.port, ssl=relay.ssl_context(), limit=2**16)
                else:
                    reader, writer = await asyncio.open_connection(relay.host, relay.port, limit=2**16)
                client = cls(relay, reader, writer)
                try:
                    await client._setup()
                except BaseException:
                    client.abort()
                    raise
                return client
        except (RelayUnavailable, RelayRefusedUs):
            raise
        except ssl.SSLError as e:
            raise RelayRefusedUs(f"TLS with the relay failed: {e.reason or e}") from e
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as e:
            raise RelayUnavailable(str(e) or type(e).__name__) from e

    async def _setup(self) -> None:
        code, text = await self._reply()
        if code != 220:
            raise RelayUnavailable(f"{code} {_text(text)}")
        await self._ehlo()
        if self.relay.use_tls:
            if "starttls" not in self.features:
                raise RelayRefusedUs("The relay does not offer STARTTLS, and EMAIL_URL asks for it (tls=1).")
            self.writer.write(b"STARTTLS\r\n")
            code, text = await self._reply()
            if code != 220:
                raise RelayRefusedUs(f"The relay refused STARTTLS: {code} {_text(text)}")
            await self.writer.start_tls(self.relay.ssl_context(), server_hostname=self.relay.host)
            await self._ehlo()
        if self.relay.user:
            await self._login()
        self.pipelining = "pipelining" in self.features

    async def _ehlo(self) -> None:
        self.writer.write(b"EHLO %s\r\n" % _local_name().encode())
        code, text = await self._reply()
        if code != 250:
            raise RelayRefusedUs(f"The relay refused EHLO: {code} {_text(text)}")
        self.features = {line.split(b" ", 1)[0].decode("ascii", "replace").lower() for line in text.split(b"\n")[1:]}

    async def _login(self) -> None:
        user, password = self.relay.user.encode(), self.relay.password.encode()
        if "auth" not in self.features:
            raise RelayRefusedUs("The relay offers no AUTH, and EMAIL_URL has a user name.")
        plain = base64.b64encode(b"\0" + user + b"\0" + password)
        self.writer.write(b"AUTH PLAIN " + plain + CRLF)
        code, text = await self._reply()
        if code == 504:  # PLAIN not supported: LOGIN
            self.writer.write(b"AUTH LOGIN\r\n")
            code, text = await self._reply()
            for value in (user, password):
                if code != 334:
                    break
                self.writer.write(base64.b64encode(value) + CRLF)
                code, text = await self._reply()
        if code != 235:
            raise RelayRefusedUs(f"The relay refused the login of {self.relay.user!r}: {code} {_text(text)}")

    async def _reply(self) -> tuple[int, bytes]:
        """One reply (its lines joined by \\n, codes stripped). A 421 closes the connection."""
        lines = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise ConnectionResetError("the relay closed the connection")
            lines.append(line[4:].rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        try:
            code = int(line[:3])
        except ValueError:
            raise ConnectionResetError(f"not an SMTP reply: {line[:60]!r}") from None
        if code == 421:
            self.abort()
            raise RelayUnavailable(f"{code} {_text(b' '.join(lines))}")
        return code, b"\n".join(lines)

    async def transaction(self, mail_from: str, to: str, data: bytes, *, eight_bit: bool = False) -> Outcome:
        """Send one message to one recipient: its outcome, or RelayUnavailable when it must go on
        another connection. Other errors (OSError, timeouts) propagate, `content_sent` telling
        whether the content had gone out. `eight_bit` data needs a relay that offers 8BITMIME."""
        self.content_sent = False
        options = b" BODY=8BITMIME" if eight_bit else b""
        if not (mail_from.isascii() and to.isascii()):
            if "smtputf8" not in self.features:
                return Outcome(ok=False, code=0, failure_type="hard", failure_reason="user_unknown", quarantine=False,
                               text="The address is not plain ASCII and the relay does not offer SMTPUTF8: it cannot be sent there.")  # fmt: skip
            options += b" SMTPUTF8"
        envelope = b"MAIL FROM:<%s>%s\r\nRCPT TO:<%s>\r\n" % (mail_from.encode(), options, to.encode())
        async with asyncio.timeout(self.relay.timeout):
            if self.pipelining:
                return await self._pipelined(envelope, data)
            return await self._plain(envelope, data)

    async def _pipelined(self, envelope: bytes, data: bytes) -> Outcome:
        rset = self._needs_rset
        self.writer.write((b"RSET\r\n" if rset else b"") + envelope + b"DATA\r\n")
        if rset:
            await self._reply()
            self._needs_rset = False
        mail, rcpt, start = await self._reply(), await self._reply(), await self._reply()
        if mail[0] == 250 and rcpt[0] in (250, 251) and start[0] == 354:
            return await self._content(data)
        if start[0] == 354:  # a relay that opened DATA anyway: an empty message closes it
            self.writer.write(b".\r\n")
            await self._reply()
        self._needs_rset = True
        if mail[0] != 250:  # the sender was refused: nothing about the recipient's address
            return refused(*mail, quarantine=False)
        return refused(*(rcpt if rcpt[0] not in (250, 251) else start))

    async def _plain(self, envelope: bytes, data: bytes) -> Outcome:
        if self._needs_rset:
            self.writer.write(b"RSET\r\n")
            await self._reply()
            self._needs_rset = False
        mail_cmd, rcpt_cmd = envelope.split(CRLF)[:2]
        for command, ok, quarantine in ((mail_cmd, (250,), False), (rcpt_cmd, (250, 251), True), (b"DATA", (354,), True)):
            self.writer.write(command + CRLF)
            code, text = await self._reply()
            if code not in ok:
                self._needs_rset = True
                return refused(code, text, quarantine=quarantine)
        return await self._content(data)

    async def _content(self, data: bytes) -> Outcome:
        self.writer.write(dot_stuffed(data))
        self.content_sent = True
        code, text = await self._reply()
        if code != 250:
            return refused(code, text)
        return Outcome(ok=True)

    async def quit(self) -> None:
        try:
            async with asyncio.timeout(5):
                self.writer.write(b"QUIT\r\n")
                await self._reply()
        except (Exception, asyncio.CancelledError):  # noqa: S110 - closing anyway
            pass
        self.abort()

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: S110 - the transport is already gone
            pass


_NAME = None


def _local_name() -> str:
    global _NAME
    if _NAME is None:
        import socket

        _NAME = socket.getfqdn() or "localhost"
        if not _NAME.isascii():
            _NAME = "localhost"
    return _NAME
