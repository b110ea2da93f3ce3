"""Builders for KPI tests: deliveries and their logs inserted directly (bulk), never through the sender."""

from datetime import timedelta
from itertools import count

import pytest
from django.utils import timezone

from deliveries.models import Delivery, ExclusionLog, JournalEntry, SendingLog, SendingStatus, State, TrackedUrl
from tracking.models import TrackingLog
from tracking.services import first_times_recompute

_seq = count(1)


@pytest.fixture
def make_delivery(db):
    def _make(label="Spring sale", state=State.FINISHED, **fields):
        now = timezone.now()
        if state != State.EDITING:
            fields.setdefault("started_at", now - timedelta(hours=2))
        if state in (State.FINISHED, State.STOPPED, State.FAILED):
            fields.setdefault("finished_at", now - timedelta(hours=1))
        return Delivery.objects.create(label=label, state=state, **fields)

    return _make


@pytest.fixture
def add_logs(db):
    """add_logs(delivery, n, status, failure_type="", failure_reason="", event_at=None, **fields) -> [SendingLog]"""

    def _add(delivery, n, status=SendingStatus.SENT, failure_type="", failure_reason="", event_at=None, **fields):
        at = event_at or (timezone.now() - timedelta(minutes=90) if status != SendingStatus.PENDING else None)
        logs = [
            SendingLog(
                delivery=delivery,
                address=f"r{next(_seq)}@example.com",
                status=status,
                failure_type=failure_type,
                failure_reason=failure_reason,
                event_at=at,
                **fields,
            )
            for _ in range(n)
        ]
        return SendingLog.objects.bulk_create(logs)

    return _add


@pytest.fixture
def track(db):
    """track(log, kind, machine=False, url=None, at=None, times=1) -> [TrackingLog]"""

    def _track(log, kind, machine=False, url=None, at=None, times=1):
        at = at or timezone.now() - timedelta(minutes=30)
        created = TrackingLog.objects.bulk_create(
            [
                TrackingLog(
                    delivery_id=log.delivery_id,
                    sending_log=log,
                    kind=kind,
                    tracked_url=url,
                    at=at,
                    is_machine=machine,
                    machine_reason="Mail scanner" if machine else "",
                )
                for _ in range(times)
            ]
        )
        first_times_recompute(log_ids=[log.pk])  # what tracking's writers keep on the sending log
        return created

    return _track


@pytest.fixture
def tracked_url(db):
    def _url(delivery, url="https://shop.example.com/sale", label="Sale", kind=TrackedUrl.Kind.CLICK):
        return TrackedUrl.objects.create(delivery=delivery, url=url, label=label, kind=kind)

    return _url


@pytest.fixture
def journal(db):
    def _entry(delivery, text, level=JournalEntry.Level.INFO):
        return JournalEntry.objects.create(delivery=delivery, text=text, level=level)

    return _entry


@pytest.fixture
def exclude(db):
    def _exclude(delivery, cause, n=1):
        return ExclusionLog.objects.bulk_create(
            [ExclusionLog(delivery=delivery, address=f"x{next(_seq)}@example.com", cause=cause) for _ in range(n)]
        )

    return _exclude
