"""The send engine's clock: `timezone.now()`, which a test may move forward.

A send spread over 26 hours of time zones runs in seconds in a test that advances this clock
(never in production: the offset is zero unless a test sets it)."""

from datetime import datetime, timedelta

from django.utils import timezone

_offset = timedelta(0)


def now() -> datetime:
    return timezone.now() + _offset


def advance(delta: timedelta) -> None:
    """Tests only: move the engine's time forward."""
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta(0)
