"""Nothing sent twice: concurrent confirmations and concurrent batch tasks, on PostgreSQL."""

import threading

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from accounts.errors import DispatchError
from deliveries.models import Delivery, SendingLog, State
from deliveries.sending import send_batch
from deliveries.services import delivery_confirm

from .conftest import make_audience, make_profiles

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_together(n, target):
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker(i):
        try:
            barrier.wait()
            results.append(target(i))
        except Exception as e:  # collected and asserted by the test
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_two_confirmations_at_once_send_once_with_one_journal_line(postgres_only, ready_delivery, marketer, make_user, settings):
    from accounts import roles

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    other = make_user("marketer2", roles.STANDARD_USERS)
    d = ready_delivery()
    users = [marketer, other]
    results, errors = run_together(2, lambda i: delivery_confirm(delivery=Delivery.objects.get(pk=d.pk), user=users[i]))
    assert len(results) == 1 and len(errors) == 1
    assert isinstance(errors[0], DispatchError) and errors[0].message == "This message has already been confirmed."
    d.refresh_from_db()
    assert d.state == State.FINISHED
    assert d.journal.filter(text__startswith="Delivery started by user").count() == 1
    assert len(mail.outbox) == 5


def test_the_send_task_run_twice_at_once_sends_each_recipient_one_message(postgres_only, ready_delivery, smtp_server, settings):
    settings.SEND_CHUNK = 7
    profiles = make_profiles([f"r{i}@example.com" for i in range(120)])
    d = ready_delivery(audience=make_audience(profiles))
    # as if confirmed, but we run the batch task ourselves, twice at once
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS, started_at=timezone.now())
    results, errors = run_together(2, lambda i: send_batch(delivery_id=d.pk, lo=0, hi=10**12))
    assert errors == []
    assert sum(results) == 120 and min(results) > 0  # both really worked, on different rows
    received = sorted(r.rcpt_tos[0] for r in smtp_server.messages)
    assert received == sorted(f"r{i}@example.com" for i in range(120))
    assert set(SendingLog.objects.filter(delivery=d).values_list("status", flat=True)) == {"sent"}
    d.refresh_from_db()
    assert (d.sent_count, d.processed_count, d.state) == (120, 120, State.FINISHED)
