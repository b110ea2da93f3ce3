"""Builders for ops tests: deliveries with their live counters set directly (the dashboard and the
alert check read counters, never the logs), and sending logs for the throughput criterion."""

from datetime import timedelta
from itertools import count

import pytest
from django.utils import timezone

from deliveries.models import Delivery, SendingLog, SendingStatus, State
from tests.deliveries.conftest import audience, new_delivery, ready_delivery  # noqa: F401  (real sends)

_seq = count(1)


@pytest.fixture(autouse=True)
def _fast_tests(settings):
    settings.HEALTH_CACHE_SECONDS = 0  # each check in a test sees the parts as they are now


@pytest.fixture
def make_delivery(db):
    def _make(label="Spring sale", state=State.FINISHED, sent=0, failed=0, **fields):
        now = timezone.now()
        if state not in (State.EDITING, State.READY, State.PREPARATION_FAILED, State.START_PENDING):
            fields.setdefault("started_at", now - timedelta(hours=2))
        if state in (State.FINISHED, State.STOPPED, State.FAILED):
            fields.setdefault("finished_at", now - timedelta(hours=1))
        fields.setdefault("to_deliver_count", sent + failed)
        return Delivery.objects.create(
            label=label, state=state, sent_count=sent, failed_count=failed, processed_count=sent + failed, **fields
        )

    return _make


@pytest.fixture
def add_logs(db):
    def _add(delivery, n, status=SendingStatus.SENT, event_at=None):
        at = event_at or timezone.now()
        return SendingLog.objects.bulk_create(
            [
                SendingLog(delivery=delivery, address=f"o{next(_seq)}@example.com", status=status, event_at=at)
                for _ in range(n)
            ]
        )

    return _add


@pytest.fixture
def supervisors(ops, make_user):
    """Two Delivery supervisors (the alert recipients) and an administrator who is not one."""
    from accounts import roles

    second = make_user("ops2", roles.DELIVERY_SUPERVISORS, first_name="Sam", last_name="Second")
    make_user("boss", roles.ADMINISTRATORS)
    return [ops, second]
