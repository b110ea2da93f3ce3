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

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        item = Received(envelope.mail_from, list(envelope.rcpt_tos), data)
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


class SinkController(Controller):
    def factory(self):
        return SMTP(self.handler, data_size_limit=50 * 1024 * 1024, enable_SMTPUTF8=True, decode_data=False, hostname="dispatch-sink")


def start_sink(handler: RecordingHandler, host: str = "127.0.0.1", port: int | None = None) -> SinkController:
    controller = SinkController(handler, hostname=host, port=port or free_port(host), ready_timeout=10)
    controller.start()
    return controller
