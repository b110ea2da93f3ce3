"""Each criterion fires at its threshold and not below, once per message and day, and is emailed to
the Delivery supervisors through a real SMTP server."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, State
from ops.models import Alert, Criterion
from ops.services import alert_acknowledge, alerts_check, thresholds_get

pytestmark = pytest.mark.django_db


def subject(received) -> str:
    return " ".join(str(received.message["Subject"]).split())  # unfolded


def criteria_of(alerts):
    return sorted((a.delivery.label, a.criterion) for a in alerts)


def test_bounces_fire_at_the_threshold_once_the_minimum_is_processed(make_delivery, supervisors, smtp_server, settings):
    settings.SITE_URL = "https://dispatch.example.org"
    t = thresholds_get()
    assert (t.bounce_rate, t.bounce_min_processed) == (0.05, 100)  # the defaults from settings
    make_delivery("at 5%", sent=95, failed=5)
    make_delivery("below 5%", sent=96, failed=4)
    make_delivery("too few processed", sent=90, failed=9)  # 9.1% of 99
    make_delivery(
        "sending at 7%",
        state=State.IN_PROGRESS,
        sent=186,
        failed=14,
        to_deliver_count=1000,
        started_at=timezone.now() - timedelta(minutes=5),
    )

    created = alerts_check()

    assert criteria_of(created) == [("at 5%", Criterion.BOUNCES), ("sending at 7%", Criterion.BOUNCES)]
    at5 = Alert.objects.get(delivery__label="at 5%")
    assert at5.summary.startswith(
        "Bounces + errors reached 5% of 100 processed messages (5), above the alert threshold of 5% after 100."
    )
    # the message shows the Warning status until the alert is acknowledged
    assert Delivery.objects.get(label="at 5%").logical_status == "warning"
    # emailed to each Delivery supervisor (not to the administrator): the two alerts of this check
    # in one message each, with their summaries and absolute links
    for person in supervisors:
        assert [subject(m) for m in smtp_server.received_by(person.email)] == ["[Dispatch] 2 alerts on 2 messages"]
    assert smtp_server.received_by("boss@example.com") == []
    body = smtp_server.received_by("ops@example.com")[0].message.get_content()
    assert "Bounces + errors reached 5% of 100 processed messages" in body
    assert "Bounces + errors reached 7% of 200 processed messages" in body
    assert f"https://dispatch.example.org/deliveries/{at5.delivery_id}/" in body
    assert f"https://dispatch.example.org/deliveries/{at5.delivery_id + 3}/" in body
    assert "https://dispatch.example.org/deployments/#alerts" in body
    assert Alert.objects.filter(emailed_at__isnull=True).count() == 0

    # once per message, criterion and day: the next checks of the day add nothing and mail nothing
    before = len(smtp_server.messages)
    assert alerts_check() == [] and alerts_check() == []
    assert Alert.objects.count() == 2 and len(smtp_server.messages) == before
    # the next day, still above the threshold: a new alert
    tomorrow = alerts_check(now=timezone.now() + timedelta(days=1), criteria=[Criterion.BOUNCES])
    assert criteria_of(tomorrow) == [("sending at 7%", Criterion.BOUNCES)]  # "at 5%" finished more than 24 h before


def test_failed_send_and_failed_preparation_raise_an_alert(make_delivery, supervisors, smtp_server):
    make_delivery("refused everywhere", state=State.FAILED, failed=3)
    make_delivery("bad template", state=State.PREPARATION_FAILED)
    make_delivery("failed last week", state=State.FAILED, finished_at=timezone.now() - timedelta(days=3))
    make_delivery("fine", state=State.FINISHED, sent=3)

    created = alerts_check()

    assert criteria_of(created) == [
        ("bad template", Criterion.PREPARATION_FAILED),
        ("refused everywhere", Criterion.SEND_FAILED),
    ]
    assert "every message was refused" in Alert.objects.get(criterion=Criterion.SEND_FAILED).summary
    [digest] = smtp_server.received_by("ops@example.com")
    assert subject(digest) == "[Dispatch] 2 alerts on 2 messages"
    body = digest.message.get_content()
    assert "1. Preparation failed" in body or "1. Send failed" in body
    assert "The preparation failed" in body and "every message was refused" in body


def test_start_pending_fires_at_its_delay_after_the_start_time(make_delivery, supervisors, smtp_server):
    now = timezone.now()
    make_delivery("30 min late", state=State.START_PENDING, schedule="at", scheduled_at=now - timedelta(minutes=30))
    make_delivery("29 min late", state=State.START_PENDING, schedule="at", scheduled_at=now - timedelta(minutes=29))
    make_delivery("tomorrow", state=State.START_PENDING, schedule="at", scheduled_at=now + timedelta(days=1))

    created = alerts_check(now=now)

    assert criteria_of(created) == [("30 min late", Criterion.START_PENDING)]
    assert "Still start pending 30 minutes after its start time" in created[0].summary
    assert "the workers or the scheduler may be down" in created[0].summary
    assert [subject(m) for m in smtp_server.received_by("ops2@example.com")] == [
        f"[Dispatch] Alert: Start pending too long — 30 min late (DM{created[0].delivery_id})"
    ]


def test_throughput_below_the_threshold_while_in_progress(make_delivery, add_logs, supervisors, smtp_server):
    now = timezone.now()
    started = now - timedelta(minutes=20)
    at_threshold = make_delivery("10 per minute", state=State.IN_PROGRESS, started_at=started, to_deliver_count=5000)
    below = make_delivery("9.9 per minute", state=State.IN_PROGRESS, started_at=started, to_deliver_count=5000)
    paused = make_delivery("paused", state=State.PAUSED, started_at=started, to_deliver_count=5000)
    just_started = make_delivery(
        "just started", state=State.IN_PROGRESS, started_at=now - timedelta(minutes=5), to_deliver_count=5000
    )
    add_logs(at_threshold, 100, event_at=now - timedelta(minutes=5))  # 100 in 10 minutes: 10 per minute
    add_logs(below, 99, event_at=now - timedelta(minutes=5))
    add_logs(below, 50, event_at=now - timedelta(minutes=11))  # before the window: not counted
    limited = make_delivery(
        "limited to 300/h", state=State.IN_PROGRESS, started_at=started, to_deliver_count=5000, rate_limit_per_hour=300
    )  # its owner made it slow on purpose
    assert paused and just_started and limited

    created = alerts_check(now=now)

    assert criteria_of(created) == [("9.9 per minute", Criterion.LOW_THROUGHPUT)]
    assert created[0].summary.startswith(
        "Only 99 messages processed in the last 10 minutes (9.9 per minute, threshold 10 per minute)"
    )
    assert len(smtp_server.received_by("ops@example.com")) == 1


def test_a_send_that_pauses_itself_raises_an_alert_within_the_minute(
    ready_delivery, marketer, admin, supervisors, smtp_server, settings, django_capture_on_commit_callbacks
):
    """Auto-pause (deliveries) journals why; ops' minute job raises and emails the alert at once."""
    from deliveries.services import delivery_confirm, sending_policy_update
    from ops.tasks import minute
    from tests.deliveries.conftest import make_audience, make_profiles

    settings.SEND_CHUNK = 10
    sending_policy_update(user=admin, autopause_bounce_rate=0.2, autopause_min_processed=10)
    emails = [f"p{i:02d}@example.com" for i in range(30)]
    for address in emails[::2]:  # half refused: over the limit whichever rows are written first
        smtp_server.set_reply(address, "550 5.1.1 User unknown")
    d = ready_delivery(audience=make_audience(make_profiles(emails)))
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.PAUSED and d.autopaused_at is not None
    assert d.journal.filter(level="critical", text__startswith="Sending paused automatically").exists()

    minute()  # the beat job, every minute

    alert = Alert.objects.get(delivery=d, criterion=Criterion.AUTOPAUSED)
    assert "The send paused itself" in alert.summary and "auto-pause limit (20% after 10 messages)" in alert.summary
    subjects = [subject(m) for m in smtp_server.received_by("ops@example.com")]
    assert subjects == [f"[Dispatch] Alert: Sending paused automatically — Spring sale (DM{d.pk})"]
    minute()
    assert Alert.objects.filter(delivery=d).count() == 1  # once per day


def test_acknowledging_records_who_and_when_and_clears_the_warning(
    make_delivery, supervisors, ops, marketer, smtp_server
):
    from django.core.exceptions import PermissionDenied

    from accounts.errors import DispatchError

    d = make_delivery("at 10%", sent=90, failed=10)
    make_delivery("also failed", state=State.FAILED, failed=1)
    alerts_check()
    d2 = Delivery.objects.get(label="at 10%")
    alert = Alert.objects.get(delivery=d)
    assert d2.has_open_alert

    with pytest.raises(PermissionDenied):
        alert_acknowledge(alert=alert, user=marketer)
    acknowledged = alert_acknowledge(alert=alert, user=ops)
    assert acknowledged.acknowledged_by == ops and acknowledged.acknowledged_at is not None
    d2.refresh_from_db()
    assert not d2.has_open_alert and d2.logical_status == "finished"
    with pytest.raises(DispatchError, match="already acknowledged by Omar Ops"):
        alert_acknowledge(alert=alert, user=ops)


def test_mail_server_down_the_alert_is_emailed_at_the_next_check(make_delivery, supervisors, settings):
    from system.smtp import RecordingHandler, start_sink

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2  # nothing listens there
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    make_delivery("at 50%", sent=50, failed=50)
    assert len(alerts_check()) == 1
    assert Alert.objects.get().emailed_at is None  # released for the next check

    handler = RecordingHandler()
    controller = start_sink(handler)
    try:
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        assert alerts_check() == []  # no new alert...
        assert len(handler.received_by("ops@example.com")) == 1  # ...but the pending one goes out
        assert Alert.objects.get().emailed_at is not None
    finally:
        controller.stop()


def test_nothing_fires_on_a_clean_send(make_delivery, supervisors, smtp_server):
    make_delivery("clean", sent=1000, failed=10)  # 1%
    make_delivery("sending well", state=State.IN_PROGRESS, sent=10, to_deliver_count=20, started_at=timezone.now())
    assert alerts_check() == [] and smtp_server.messages == []


def test_beat_checks_every_ten_minutes_and_samples_every_minute(settings):
    from config.celery import app

    assert settings.CELERY_BEAT_SCHEDULE["ops-alerts-check"] == {"task": "ops.alerts_check", "schedule": 600.0}
    assert settings.CELERY_BEAT_SCHEDULE["ops-minute"] == {"task": "ops.minute", "schedule": 60.0}
    assert {"ops.alerts_check", "ops.minute"} <= set(app.tasks)


def test_an_event_is_alerted_once_even_across_midnight_while_a_condition_is_alerted_each_day(
    make_delivery, supervisors, smtp_server
):
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    before, after = midnight - timedelta(minutes=10), midnight + timedelta(minutes=5)
    make_delivery(
        "Paused itself", state=State.PAUSED, autopaused_at=before - timedelta(minutes=1), sent=400, failed=200
    )
    make_delivery("Refused", state=State.FAILED, failed=150, finished_at=before - timedelta(minutes=2))
    assert criteria_of(alerts_check(now=before)) == [
        ("Paused itself", Criterion.AUTOPAUSED),
        ("Paused itself", Criterion.BOUNCES),
        ("Refused", Criterion.BOUNCES),
        ("Refused", Criterion.SEND_FAILED),
    ]
    # fifteen minutes later it is another day: the bounce rate is still too high (a condition: alerted
    # again), but the auto-pause and the failure are the same events as before (not alerted again)
    assert criteria_of(alerts_check(now=after)) == [
        ("Paused itself", Criterion.BOUNCES),
        ("Refused", Criterion.BOUNCES),
    ]
