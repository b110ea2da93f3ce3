"""A bounce reported after the relay accepted the message (a provider's webhook, heard by
tracking) is written by deliveries' service: the log, the message's counters and its journal."""

import pytest
from django.utils import timezone

from audiences import failures
from deliveries import models
from deliveries.models import Delivery, SendingLog, SendingStatus, State
from deliveries.services import sending_log_bounce

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_log(db):
    d = Delivery.objects.create(label="Sale", state=State.FINISHED, sent_count=2, processed_count=2, to_deliver_count=2)
    SendingLog.objects.create(delivery=d, address="bob@example.com", status=SendingStatus.SENT)
    return SendingLog.objects.create(delivery=d, address="ann@example.com", status=SendingStatus.SENT)


def test_a_sent_log_turns_failed_with_the_counters_and_a_journal_line(sent_log):
    at = timezone.now()
    assert sending_log_bounce(
        log=sent_log, failure_type="hard", failure_reason="user_unknown", text="550 5.1.1 no such user", at=at, reported_by="postmark"
    )
    sent_log.refresh_from_db()
    assert (sent_log.status, sent_log.failure_type, sent_log.failure_reason, sent_log.event_at) == ("failed", "hard", "user_unknown", at)
    d = Delivery.objects.get(pk=sent_log.delivery_id)
    assert (d.sent_count, d.failed_count, d.processed_count) == (1, 1, 2)
    line = d.journal.get()
    assert line.level == "warning"
    assert line.text == "Asynchronous bounce for ann@example.com reported by postmark: User unknown (Hard)."


def test_a_log_that_already_failed_is_left_as_it_is(sent_log):
    SendingLog.objects.filter(pk=sent_log.pk).update(status=SendingStatus.FAILED, failure_type="soft", failure_reason="mailbox_full")
    assert not sending_log_bounce(
        log=sent_log, failure_type="hard", failure_reason="user_unknown", text="", at=timezone.now(), reported_by="mailgun"
    )
    sent_log.refresh_from_db()
    assert (sent_log.failure_type, sent_log.failure_reason) == ("soft", "mailbox_full")
    d = Delivery.objects.get(pk=sent_log.delivery_id)
    assert (d.sent_count, d.failed_count) == (2, 0) and not d.journal.exists()


def test_the_failure_vocabulary_lives_in_audiences_and_deliveries_names_the_same():
    assert models.FailureType is failures.FailureType and models.FailureReason is failures.FailureReason
    assert failures.COMPLAINT not in failures.FailureType.values  # a complaint never marks a sending log
    assert set(failures.QUARANTINE_TYPES) == {"hard", "soft", "complaint"}
