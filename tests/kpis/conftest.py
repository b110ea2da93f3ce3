"""Builders for KPI tests: tracking logs, tracked URLs, journal lines and exclusions inserted directly
(bulk, tests/factories.py), never through the sender. Messages and their sending logs come from the
shared `make_delivery` and `add_logs` (tests/conftest.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import ExclusionLog, JournalEntry, TrackedUrl
from tests.factories import ExclusionLogFactory, JournalEntryFactory, TrackedUrlFactory, TrackingLogFactory
from tracking.models import TrackingLog
from tracking.services import first_times_recompute


@pytest.fixture
def track(db):
    """track(log, kind, machine=False, url=None, at=None, times=1) -> [TrackingLog]"""

    def _track(log, kind, machine=False, url=None, at=None, times=1):
        at = at or timezone.now() - timedelta(minutes=30)
        created = TrackingLog.objects.bulk_create(
            TrackingLogFactory.build_batch(times, sending_log=log, kind=kind, tracked_url=url, at=at, is_machine=machine)
        )
        first_times_recompute(log_ids=[log.pk])  # what tracking's writers keep on the sending log
        return created

    return _track


@pytest.fixture
def tracked_url(db):
    def _url(delivery, url="https://shop.example.com/sale", label="Sale", kind=TrackedUrl.Kind.CLICK):
        return TrackedUrlFactory(delivery=delivery, url=url, label=label, kind=kind)

    return _url


@pytest.fixture
def journal(db):
    def _entry(delivery, text, level=JournalEntry.Level.INFO):
        return JournalEntryFactory(delivery=delivery, text=text, level=level)

    return _entry


@pytest.fixture
def exclude(db):
    def _exclude(delivery, cause, n=1):
        return ExclusionLog.objects.bulk_create(ExclusionLogFactory.build_batch(n, delivery=delivery, cause=cause))

    return _exclude
