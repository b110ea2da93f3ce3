"""The hook deliveries owns (deliveries/hooks.py): apps above it are told that a send ended, after
the commit that ended it, without deliveries naming them (kpis recomputes the send's KPIs)."""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries import hooks
from deliveries.models import Delivery, State
from deliveries.services import delivery_confirm, delivery_stop

pytestmark = pytest.mark.django_db


@pytest.fixture
def told():
    calls = []

    def listener(*, delivery_id):
        calls.append(delivery_id)

    hooks.on_send_ended(listener)
    hooks.on_send_ended(listener)  # registered once, however often
    yield calls
    hooks._send_ended.remove(listener)


def test_the_end_of_a_send_is_told_once_after_its_commit(told, ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery(schedule="at", scheduled_at=timezone.now() + timedelta(days=1))
    delivery_confirm(delivery=d, user=marketer)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        delivery_stop(delivery=d, user=marketer)
    assert told == []  # not before the commit
    for callback in callbacks:
        callback()
    assert told == [d.pk]
    assert Delivery.objects.get(pk=d.pk).state == State.STOPPED


def test_a_send_that_is_not_ended_tells_nothing(told, ready_delivery, marketer, django_capture_on_commit_callbacks):
    from accounts.errors import DispatchError

    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(DispatchError):
        delivery_stop(delivery=d, user=marketer)  # ready: refused, nothing ended
    assert told == []


def test_a_failing_listener_is_logged_and_the_others_are_still_told(told, caplog, django_capture_on_commit_callbacks):
    def broken(*, delivery_id):
        raise RuntimeError("broker away")

    hooks._send_ended.insert(0, broken)
    try:
        with caplog.at_level(logging.ERROR, logger="deliveries.hooks"), django_capture_on_commit_callbacks(execute=True):
            hooks.send_ended(delivery_id=42)
    finally:
        hooks._send_ended.remove(broken)
    assert told == [42]
    assert "delivery 42: the send-ended hook" in caplog.text and "broker away" in caplog.text


def test_kpis_listens_from_its_app_config_and_deliveries_names_nothing_of_kpis():
    from pathlib import Path

    from kpis.services import kpis_send_ended

    assert kpis_send_ended in hooks._send_ended
    for path in Path(hooks.__file__).parent.rglob("*.py"):
        assert "kpis." not in path.read_text(), path  # no task name, no import of the app above
