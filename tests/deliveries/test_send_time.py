"""A send at each recipient's own time ("Optimize the sending time per recipient"): due times per
time zone (half-hour zones, a daylight-saving change on the contact date), from a profile
attribute, the Confirm dialog's waves and warning, and a send spread over 26 hours with a real
worker whose clock a test moves forward."""

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from deliveries import clock
from deliveries.models import Delivery, ExclusionLog, SendingLog, State
from deliveries.services import delivery_confirm, delivery_prepare, delivery_stop

from .conftest import make_audience, make_profiles

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(autouse=True)
def _clock():
    clock.reset()
    yield
    clock.reset()


def prepared(new_delivery, marketer, capture, profiles, **data):
    d = new_delivery(audience=make_audience(profiles), **data)
    with capture(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    return d


def due(d) -> dict:
    return dict(SendingLog.objects.filter(delivery=d).values_list("address", "due_at"))


def test_the_contact_time_is_read_in_each_profiles_own_zone(new_delivery, marketer, django_capture_on_commit_callbacks):
    # 1 November 2026, 9:00: New York leaves daylight saving time that very night (2:00)
    zones = {"paris@example.com": "Europe/Paris", "tokyo@example.com": "Asia/Tokyo", "kolkata@example.com": "Asia/Kolkata",
             "ny@example.com": "America/New_York", "adelaide@example.com": "Australia/Adelaide",
             "nozone@example.com": "", "mars@example.com": "Mars/Olympus_Mons"}  # fmt: skip
    profiles = make_profiles([{"email": e, "time_zone": z} for e, z in zones.items()])
    d = prepared(new_delivery, marketer, django_capture_on_commit_callbacks, profiles, schedule="at",
                 scheduled_at=datetime(2026, 11, 1, 9, 0, tzinfo=PARIS), schedule_tz="Europe/Paris", send_time="recipient_tz")  # fmt: skip
    assert d.state == State.READY, list(d.journal.values_list("text", flat=True))
    utc = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
    assert due(d) == {
        "paris@example.com": utc(2026, 11, 1, 8, 0),  # CET (+1) since 25 October
        "tokyo@example.com": utc(2026, 11, 1, 0, 0),  # +9
        "kolkata@example.com": utc(2026, 11, 1, 3, 30),  # +5:30
        "ny@example.com": utc(2026, 11, 1, 14, 0),  # EST (-5) from 2:00 that day: 9:00 is after the change
        "adelaide@example.com": utc(2026, 10, 31, 22, 30),  # ACDT (+10:30), a day earlier in UTC
        "nozone@example.com": utc(2026, 11, 1, 8, 0),  # no zone: the message's
        "mars@example.com": utc(2026, 11, 1, 8, 0),  # a zone no database knows: the message's
    }
    assert (d.first_due_at, d.last_due_at) == (utc(2026, 10, 31, 22, 30), utc(2026, 11, 1, 14, 0))


def test_a_date_from_a_profile_attribute_with_an_offset_and_the_rows_without_one_excluded(
    new_delivery, marketer, django_capture_on_commit_callbacks
):
    values = {"date@example.com": "2026-12-24", "local@example.com": "2026-12-24T18:30", "offset@example.com": "2026-12-24T10:00+02:00",
              "empty@example.com": "", "words@example.com": "next tuesday", "feb30@example.com": "2026-02-30"}  # fmt: skip
    specs = [{"email": e, "attributes": {"birthday": v}} for e, v in values.items()] + [{"email": "none@example.com"}]
    d = prepared(new_delivery, marketer, django_capture_on_commit_callbacks, make_profiles(specs), schedule_tz="Europe/Paris",
                 send_time="attribute", send_time_attribute="birthday", send_time_offset_hours=9)  # fmt: skip
    assert d.state == State.READY and d.to_deliver_count == 3
    assert due(d) == {
        "date@example.com": datetime(2026, 12, 24, 8, 0, tzinfo=UTC),  # 00:00 Paris (+1) + 9 h
        "local@example.com": datetime(2026, 12, 25, 2, 30, tzinfo=UTC),  # 18:30 Paris + 9 h
        "offset@example.com": datetime(2026, 12, 24, 17, 0, tzinfo=UTC),  # 10:00+02:00 + 9 h
    }
    excluded = sorted(ExclusionLog.objects.filter(delivery=d, cause="send_date_missing").values_list("address", flat=True))
    assert excluded == ["empty@example.com", "feb30@example.com", "none@example.com", "words@example.com"]
    assert d.journal.filter(text__contains="4 profiles excluded: Send date empty or not a date").exists()


def test_at_the_recipients_time_zone_needs_a_contact_date_and_may_be_past_here(new_delivery):
    from accounts.errors import InvalidInput

    with pytest.raises(InvalidInput, match="needs a contact date"):
        new_delivery(send_time="recipient_tz")
    # 9:00 has passed in Paris but not in New York: saved (the Confirm dialog warns)
    past = datetime.now(PARIS).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    d = new_delivery(schedule="at", scheduled_at=past, schedule_tz="Europe/Paris", send_time="recipient_tz")
    assert d.pk


def test_the_confirm_dialog_gives_the_waves_and_warns_of_times_already_passed(
    new_delivery, marketer, client, django_capture_on_commit_callbacks
):
    wall = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)  # an hour ago in UTC
    profiles = make_profiles([{"email": "utc1@example.com", "time_zone": "UTC"}, {"email": "utc2@example.com", "time_zone": "UTC"},
                              {"email": "ny@example.com", "time_zone": "America/New_York"}])  # fmt: skip
    d = prepared(new_delivery, marketer, django_capture_on_commit_callbacks, profiles, schedule="at", scheduled_at=wall,
                 schedule_tz="UTC", send_time="recipient_tz")  # fmt: skip
    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "Confirm at least 24 hours ahead: 2 recipients' time has already passed and they will receive it at once." in page
    assert "Messages go at each recipient's own time." in page and "Messages will be sent on" not in page
    assert f"the first wave at {wall:%Y-%m-%d %H:%M}, the last at " in page
    assert 'data-testid="wave-plan"' not in page  # the plan shows once the send is confirmed


def test_confirmed_it_waits_for_the_first_wave_and_stop_cancels_the_waves_to_come(
    new_delivery, marketer, smtp_server, django_capture_on_commit_callbacks
):
    from deliveries.tasks import tick

    contact = (datetime.now(UTC) + timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
    profiles = make_profiles([{"email": "tokyo@example.com", "time_zone": "Asia/Tokyo"}, {"email": "ny@example.com", "time_zone": "America/New_York"}])
    d = prepared(new_delivery, marketer, django_capture_on_commit_callbacks, profiles, schedule="at", scheduled_at=contact,
                 schedule_tz="UTC", send_time="recipient_tz")  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.START_PENDING and smtp_server.messages == []
    clock.advance(d.first_due_at - clock.now() + timedelta(seconds=1))  # Tokyo's 9:00
    with django_capture_on_commit_callbacks(execute=True):
        tick()
    d.refresh_from_db()
    assert d.state == State.IN_PROGRESS and [m.rcpt_tos for m in smtp_server.messages] == [["tokyo@example.com"]]
    with django_capture_on_commit_callbacks(execute=True):
        tick()  # New York's time has not come: nothing more
    assert len(smtp_server.messages) == 1
    d = delivery_stop(delivery=d, user=marketer)
    assert d.state == State.STOPPED
    assert SendingLog.objects.get(delivery=d, address="ny@example.com").status == "cancelled"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_send_spread_over_26_hours_goes_wave_by_wave_with_a_real_worker(celery_worker, smtp_server, marketer, new_delivery):
    """Kiritimati (+14) to Etc/GMT+12 (-12): the same 9:00 is 26 hours apart. The test moves the
    engine's clock to each wave; nobody receives the message before their own time."""
    from deliveries.services import delivery_prepare_run
    from deliveries.tasks import tick

    zones = ["Pacific/Kiritimati", "Asia/Tokyo", "Asia/Kolkata", "Europe/Paris", "America/New_York", "Etc/GMT+12"]
    profiles = make_profiles([{"email": f"r{i}@example.com", "time_zone": z} for i, z in enumerate(zones)])
    contact = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0, tzinfo=None)
    d = new_delivery(audience=make_audience(profiles), schedule="at", scheduled_at=contact.replace(tzinfo=UTC), schedule_tz="UTC",
                     send_time="recipient_tz")  # fmt: skip
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)
    d.refresh_from_db()
    assert d.last_due_at - d.first_due_at == timedelta(hours=26)
    delivery_confirm(delivery=d, user=marketer)
    expected = {f"r{i}@example.com": contact.replace(tzinfo=ZoneInfo(z)) for i, z in enumerate(zones)}
    for address, at in sorted(expected.items(), key=lambda item: item[1]):
        clock.advance(at - clock.now() + timedelta(seconds=1))
        tick()  # the beat's minute: starts the send at the first wave, then wakes it at each one
        deadline = time.monotonic() + 30
        while not smtp_server.received_by(address):
            assert time.monotonic() < deadline, f"{address} not sent at its time"
            time.sleep(0.05)
        not_yet = [a for a, t in expected.items() if t > at]
        assert not any(smtp_server.received_by(a) for a in not_yet), "a recipient got it before their own time"
    deadline = time.monotonic() + 30
    while Delivery.objects.get(pk=d.pk).state != State.FINISHED:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sorted(a for m in smtp_server.messages for a in m.rcpt_tos) == sorted(expected)
