import pytest
from django.core import mail

from deliveries.models import SendingLog, State
from deliveries.services import delivery_confirm

pytestmark = pytest.mark.django_db


def test_prepare_then_confirm_sends_through_the_django_backend(ready_delivery, marketer, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    d = ready_delivery()
    assert d.state == State.READY, list(d.journal.values_list("text", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED
    assert len(mail.outbox) == 5
    assert set(SendingLog.objects.values_list("status", flat=True)) == {"sent"}
