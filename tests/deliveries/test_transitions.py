"""Every transition of DOMAIN.md §2 and a refusal, naming the state, for each illegal one."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.errors import DispatchError
from deliveries import services
from deliveries.models import Delivery, JournalEntry, SendingLog, SendingStatus, State
from deliveries.sending import delivery_finish_if_done, dispatch, send_batch
from deliveries.services import (
    delivery_confirm,
    delivery_pause,
    delivery_prepare,
    delivery_resume,
    delivery_stop,
    delivery_stop_preparation,
    delivery_update,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def set_state(d, state, **extra):
    Delivery.objects.filter(pk=d.pk).update(state=state, **extra)
    d.refresh_from_db()
    return d


def test_editing_to_preparing_to_ready(new_delivery, marketer, django_capture_on_commit_callbacks):
    d = new_delivery()
    assert d.state == State.EDITING
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        d = delivery_prepare(delivery=d, user=marketer)
    assert d.state == State.PREPARING and len(callbacks) == 1
    callbacks[0]()
    d.refresh_from_db()
    assert d.state == State.READY
    assert (d.targeted_count, d.to_deliver_count) == (5, 5)
    assert d.journal.filter(text__regex=r"^Analysis completed in \d+\.\d s \(0 warnings\)\.$").exists()


def test_prepare_needs_an_audience_and_content(new_delivery, marketer):
    d = new_delivery(audience=None, html="")
    with pytest.raises(DispatchError, match="Set an audience and content before preparing"):
        delivery_prepare(delivery=d, user=marketer)
    assert Delivery.objects.get(pk=d.pk).state == State.EDITING


def test_preparing_to_preparation_failed_on_a_critical_check(ready_delivery):
    d = ready_delivery(html="<p>{% if %}</p>")
    assert d.state == State.PREPARATION_FAILED
    assert d.journal.filter(level="critical", text__contains="line 1").exists()


def test_stop_preparation_returns_to_editing(new_delivery, marketer, django_capture_on_commit_callbacks):
    d = new_delivery()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        delivery_prepare(delivery=d, user=marketer)
    d = delivery_stop_preparation(delivery=d, user=marketer)
    assert d.state == State.EDITING
    callbacks[0]()  # the task starts after the stop: it does nothing
    d.refresh_from_db()
    assert d.state == State.EDITING and not SendingLog.objects.filter(delivery=d).exists()


def test_preparation_failed_to_preparing_or_to_editing(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery(html="<p>{{ broken </p>")
    assert d.state == State.PREPARATION_FAILED
    d = delivery_update(delivery=d, user=marketer, data={"html": "<p>fixed {{ unsubscribe_url }}</p>"})
    assert d.state == State.EDITING
    set_state(d, State.PREPARATION_FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.READY


def test_ready_edit_goes_back_to_editing_and_is_journaled(ready_delivery, marketer):
    d = ready_delivery()
    d = delivery_update(delivery=d, user=marketer, data={"subject": "New subject"})
    assert d.state == State.EDITING
    assert d.journal.filter(level="warning", text__contains="after preparation: back to editing").exists()


def test_ready_prepare_again_replaces_the_preparation(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery()
    first_ids = set(SendingLog.objects.filter(delivery=d).values_list("id", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.READY
    ids = set(SendingLog.objects.filter(delivery=d).values_list("id", flat=True))
    assert len(ids) == 5 and not ids & first_ids


def test_ready_confirm_now_goes_in_progress_then_finished(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        d = delivery_confirm(delivery=d, user=marketer)
    assert d.state == State.IN_PROGRESS
    for cb in callbacks:
        cb()
    d.refresh_from_db()
    assert d.state == State.FINISHED
    assert d.journal.filter(text="Delivery finished (all messages have been processed).").count() == 1
    assert d.journal.filter(text="Delivery started by user “Mia Marketer (marketer)”.").count() == 1
    assert len(mail.outbox) == 5


def test_ready_confirm_with_a_date_ahead_is_start_pending_then_starts_at_its_time(ready_delivery, marketer, django_capture_on_commit_callbacks):
    at = timezone.now() + timedelta(hours=2)
    d = ready_delivery(schedule="at", scheduled_at=at, schedule_tz="Europe/Paris")
    with django_capture_on_commit_callbacks(execute=True):
        d = delivery_confirm(delivery=d, user=marketer)
    assert d.state == State.START_PENDING and len(mail.outbox) == 0
    assert services.deliveries_start_due(now=at - timedelta(minutes=1)) == []
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_start_due(now=at + timedelta(seconds=1)) == [d.pk]
    d.refresh_from_db()
    assert d.state == State.FINISHED and len(mail.outbox) == 5
    assert d.journal.filter(text="The scheduled time has come: sending started.").exists()


def test_start_pending_stop(ready_delivery, marketer):
    d = ready_delivery(schedule="at", scheduled_at=timezone.now() + timedelta(days=1))
    delivery_confirm(delivery=d, user=marketer)
    d = delivery_stop(delivery=d, user=marketer)
    assert d.state == State.STOPPED
    assert SendingLog.objects.filter(delivery=d, status=SendingStatus.CANCELLED).count() == 5


def confirmed_without_sending(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        d = delivery_confirm(delivery=d, user=marketer)
    return d


def test_in_progress_pause_resume_and_stop(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = confirmed_without_sending(ready_delivery, marketer, django_capture_on_commit_callbacks)
    d = delivery_pause(delivery=d, user=marketer)
    assert d.state == State.PAUSED
    assert send_batch(delivery_id=d.pk, lo=0, hi=10**9) == 0  # a paused send sends nothing
    with django_capture_on_commit_callbacks(execute=False):
        d = delivery_resume(delivery=d, user=marketer)
    assert d.state == State.IN_PROGRESS
    d = delivery_stop(delivery=d, user=marketer)
    assert d.state == State.STOPPED
    assert d.journal.filter(text__startswith="Delivery stopped by Mia Marketer (marketer): 5 messages not sent were cancelled.").exists()
    assert d.processed_count == 5 and len(mail.outbox) == 0


def test_in_progress_to_retry_pending_then_retry_in_progress_then_finished(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = confirmed_without_sending(ready_delivery, marketer, django_capture_on_commit_callbacks)
    later = timezone.now() + timedelta(minutes=15)
    SendingLog.objects.filter(delivery=d).update(status=SendingStatus.SENT)
    one = SendingLog.objects.filter(delivery=d).first()
    SendingLog.objects.filter(pk=one.pk).update(status=SendingStatus.PENDING, next_attempt_at=later)
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery_finish_if_done(delivery_id=d.pk) == State.RETRY_PENDING
    SendingLog.objects.filter(pk=one.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert dispatch(delivery_id=d.pk) == 1  # the batch runs eagerly and sends the retry
    d.refresh_from_db()
    assert d.state == State.FINISHED
    assert d.journal.filter(text="Retry pass 1 started: 1 message to retry.").count() == 1


def test_retry_in_progress_back_to_retry_pending_and_retry_pending_stop(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = confirmed_without_sending(ready_delivery, marketer, django_capture_on_commit_callbacks)
    set_state(d, State.RETRY_IN_PROGRESS)
    SendingLog.objects.filter(delivery=d).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery_finish_if_done(delivery_id=d.pk) == State.RETRY_PENDING
    d = delivery_stop(delivery=d, user=marketer)
    assert d.state == State.STOPPED


def test_in_progress_to_failed_when_every_message_is_refused(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    d = ready_delivery()
    for i in range(5):
        smtp_server.set_reply(f"person{i}@example.com", "550 5.7.1 Relaying denied")
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FAILED
    assert d.journal.filter(level="critical", text__startswith="Delivery failed").exists()


ALLOWED = {
    "prepare": {State.EDITING, State.READY, State.PREPARATION_FAILED},
    "stop_preparation": {State.PREPARING},
    "pause": {State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS},
    "resume": {State.PAUSED},
    "stop": {State.START_PENDING, State.IN_PROGRESS, State.RETRY_PENDING, State.RETRY_IN_PROGRESS, State.PAUSED},
    "confirm": {State.READY},
}
ACTIONS = {
    "prepare": services.delivery_prepare,
    "stop_preparation": services.delivery_stop_preparation,
    "pause": services.delivery_pause,
    "resume": services.delivery_resume,
    "stop": services.delivery_stop,
    "confirm": services.delivery_confirm,
}
@pytest.mark.parametrize("action", list(ACTIONS))
def test_illegal_transitions_are_refused_with_a_sentence_and_change_nothing(action, new_delivery, marketer):
    d = new_delivery()
    for state in [s for s in State if s not in ALLOWED[action]]:
        set_state(d, state, started_at=timezone.now() if state != State.EDITING else None)
        before = JournalEntry.objects.filter(delivery=d).count()
        with pytest.raises(DispatchError) as refused:
            ACTIONS[action](delivery=d, user=marketer)
        message = refused.value.message
        assert message.endswith("."), (state, message)
        if action != "confirm":
            assert f"while it is “{state.label}”" in message, (state, message)
        assert Delivery.objects.get(pk=d.pk).state == state, state
        assert JournalEntry.objects.filter(delivery=d).count() == before, state


@pytest.mark.parametrize("state", [State.STOPPED, State.FAILED, State.FINISHED, State.IN_PROGRESS])
def test_a_started_message_is_read_only_but_can_be_duplicated(state, new_delivery, marketer):
    d = set_state(new_delivery(schedule="at", scheduled_at=timezone.now() + timedelta(days=1)), state)
    with pytest.raises(DispatchError, match="read-only. Duplicate it"):
        delivery_update(delivery=d, user=marketer, data={"subject": "x"})
    copy = services.delivery_duplicate(delivery=d, user=marketer)
    assert copy.state == State.EDITING and copy.subject == d.subject
    assert copy.schedule == "now" and copy.scheduled_at is None


def test_the_beat_task_starts_a_scheduled_message_when_the_clock_reaches_its_time(ready_delivery, marketer, django_capture_on_commit_callbacks):
    from unittest import mock

    from deliveries.tasks import tick

    at = timezone.now() + timedelta(hours=3)
    d = ready_delivery(schedule="at", scheduled_at=at, schedule_tz="America/New_York")
    delivery_confirm(delivery=d, user=marketer)
    tick.apply()  # now: too early
    assert Delivery.objects.get(pk=d.pk).state == State.START_PENDING
    with mock.patch("django.utils.timezone.now", return_value=at + timedelta(seconds=30)), django_capture_on_commit_callbacks(execute=True):
        tick.apply()
    d.refresh_from_db()
    assert d.state == State.FINISHED and len(mail.outbox) == 5
    assert d.started_at == at + timedelta(seconds=30)
