"""A local SMTP sink (aiosmtpd) that keeps every message, and can refuse chosen recipients.

Used by `manage.py smtp_sink` (the sink `make run` starts) and by the tests' SMTP fixture.
"""

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = field(default_factory=time.time)
    tls: bool = False  # came over an encrypted session (STARTTLS)
    mail_options: list = field(default_factory=list)  # MAIL FROM parameters (BODY=8BITMIME, SMTPUTF8)
    login: str = ""  # the user name the client authenticated with

    @property
    def message(self):
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class _Rule:
    reply: str
    times: int | None  # None: every time


class RecordingHandler:
    """aiosmtpd handler: records messages; answers a chosen reply for chosen recipients.

    `set_reply("a@example.com", "550 5.1.1 User unknown")` refuses that address every time;
    `times=1` refuses it once, then accepts it.
    """

    def __init__(self, mailbox_dir: Path | None = None, keep_in_memory: bool = True):
        self.messages: list[Received] = []
        self.max_connections: int | None = None  # beyond this many at once: "421 Too many connections"
        self.refuse_connections = False  # every new connection: "421 Service not available"
        self.sessions = 0  # open now
        self.peak_sessions = 0  # the most open at once
        self.refused_connections = 0
        self.delay_seconds = 0.0  # wait this long before accepting each message (a slow relay)
        self._transports: set = set()
        self.rules: dict[str, _Rule] = {}
        self.drops: dict[str, _Rule] = {}
        self.mailbox_dir = Path(mailbox_dir) if mailbox_dir else None
        self.keep_in_memory = keep_in_memory
        self.refused: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        if self.mailbox_dir:
            self.mailbox_dir.mkdir(parents=True, exist_ok=True)

    def set_reply(self, address: str, reply: str, times: int | None = None) -> None:
        with self._lock:
            self.rules[address.lower()] = _Rule(reply, times)

    def drop_after_data(self, address: str, times: int | None = 1) -> None:
        """For a message to `address`: keep it, then cut the connection instead of replying (a relay
        that crashed, or a network cut, after taking the message: the sender cannot know)."""
        with self._lock:
            self.drops[address.lower()] = _Rule("", times)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.rules.clear()
            self.drops.clear()
            self.refused.clear()

    def received_by(self, address: str) -> list[Received]:
        address = address.lower()
        return [m for m in self.messages if address in (r.lower() for r in m.rcpt_tos)]

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        """aiosmtpd's EHLO hook: advertise PIPELINING (RFC 2920) unless the server was started
        without it; aiosmtpd answers pipelined commands in order."""
        session.host_name = hostname
        if getattr(server, "advertise_pipelining", True) and responses and responses[-1].startswith("250 "):
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._lock:
            rule = self.rules.get(address.lower())
            if rule and (rule.times is None or rule.times > 0):
                if rule.times is not None:
                    rule.times -= 1
                self.refused.append((address, rule.reply))
                return rule.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def cut_connections(self) -> int:
        """Cut every open connection at once (a relay restarted): returns how many were cut."""
        transports = list(self._transports)
        for transport in transports:
            loop = getattr(transport, "_loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(transport.abort)
        return len(transports)

    async def handle_DATA(self, server, session, envelope):
        if self.delay_seconds:
            import asyncio

            await asyncio.sleep(self.delay_seconds)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        auth = getattr(session, "auth_data", None)
        login = auth.login.decode() if isinstance(getattr(auth, "login", None), bytes) else ""
        item = Received(envelope.mail_from, list(envelope.rcpt_tos), data, tls=session.ssl is not None, login=login,
                        mail_options=list(envelope.mail_options))  # fmt: skip
        if self.keep_in_memory:
            with self._lock:
                self.messages.append(item)
        if self.mailbox_dir:
            self._store(item)
        if self._take_drop(envelope.rcpt_tos):
            server.transport.abort()  # no reply: the connection is cut
        return "250 Message accepted for delivery"

    def _take_drop(self, rcpt_tos) -> bool:
        with self._lock:
            for address in rcpt_tos:
                rule = self.drops.get(address.lower())
                if rule and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    return True
        return False

    def _store(self, item: Received) -> None:
        name = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(item.at))}-{uuid.uuid4().hex[:8]}.eml"
        (self.mailbox_dir / name).write_bytes(item.data)
        msg = message_from_bytes(item.data, policy=policy.default)
        entry = {
            "file": name,
            "at": item.at,
            "from": item.mail_from,
            "to": item.rcpt_tos,
            "subject": str(msg.get("Subject", "")),
        }
        with self._lock, open(self.mailbox_dir / "index.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Authenticator:
    """AUTH PLAIN / LOGIN against one user name and password (aiosmtpd's authenticator protocol)."""

    def __init__(self, user: str, password: str):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _SinkSMTP(SMTP):
    """aiosmtpd's server, which can refuse a connection as a loaded or failing relay does."""

    def connection_made(self, transport):
        handler = self.event_handler
        if handler.refuse_connections or (handler.max_connections is not None and handler.sessions >= handler.max_connections):
            handler.refused_connections += 1
            reason = "Service not available" if handler.refuse_connections else "Too many connections from your host"
            transport.write(f"421 4.7.0 {reason}\r\n".encode())
            transport.close()
            self._refused = True
            return
        handler.sessions += 1
        handler.peak_sessions = max(handler.peak_sessions, handler.sessions)
        handler._transports.add(transport)
        self._counted_transport = transport
        super().connection_made(transport)

    def connection_lost(self, exc):
        if getattr(self, "_refused", False):
            return
        self.event_handler.sessions -= 1
        self.event_handler._transports.discard(getattr(self, "_counted_transport", None))
        super().connection_lost(exc)


class SinkController(Controller):
    """The sink's server: advertises PIPELINING (RFC 2920: it answers pipelined commands in order),
    and, when given, offers STARTTLS (`tls_context`) and requires AUTH (`auth=(user, password)`)."""

    def __init__(self, handler, *, pipelining: bool = True, tls_context=None, auth: tuple[str, str] | None = None,
                 eight_bit_mime: bool = True, **kwargs):  # fmt: skip
        self.pipelining, self.tls_context, self.auth, self.eight_bit_mime = pipelining, tls_context, auth, eight_bit_mime
        super().__init__(handler, **kwargs)

    def factory(self):
        options = {}
        if self.tls_context is not None:
            options["tls_context"] = self.tls_context
        if self.auth:
            options.update(authenticator=_Authenticator(*self.auth), auth_required=True, auth_require_tls=self.tls_context is not None)
        # aiosmtpd advertises 8BITMIME unless it decodes the data (then the handler reads the original bytes)
        server = _SinkSMTP(self.handler, data_size_limit=50 * 1024 * 1024, enable_SMTPUTF8=True,
                           decode_data=not self.eight_bit_mime, hostname="dispatch-sink", **options)  # fmt: skip
        server.advertise_pipelining = self.pipelining
        return server


def start_sink(handler: RecordingHandler, host: str = "127.0.0.1", port: int | None = None, **options) -> SinkController:
    controller = SinkController(handler, hostname=host, port=port or free_port(host), ready_timeout=10, **options)
    controller.start()
    return controller
