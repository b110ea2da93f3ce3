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
