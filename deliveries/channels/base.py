"""The channel interface: a transport opened once per batch, sending prepared messages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcome:
    ok: bool
    code: int = 250
    text: str = ""
    failure_type: str = ""  # soft / hard / ignored
    failure_reason: str = ""  # FailureReason value
    quarantine: bool = True  # False when the failure says nothing about the address
    # The message may or may not have been delivered (its content reached the relay, the reply did
    # not come back): the log ends "unknown" and is never resent automatically (no duplicate).
    unknown: bool = False


class Transport:
    def open(self) -> None: ...

    def close(self) -> None: ...

    def send(self, message) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
