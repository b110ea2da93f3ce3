"""The Confirm send dialog recaps what is about to happen; Stop sending asks in the same kind of
dialog (not the browser's confirm())."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import Delivery, State

pytestmark = pytest.mark.django_db


def _dialog(html: str, name: str) -> str:
    return re.search(rf'<dialog id="{name}".*?</dialog>', html, re.S).group(0)


def _recap(html: str) -> dict[str, str]:
    recap = re.search(r'data-testid="confirm-recap">(.*?)</dl>', html, re.S).group(1)
    pairs = re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", recap, re.S)
    return {k: re.sub(r"\s+", " ", v).strip() for k, v in pairs}


def test_the_dialog_recaps_message_subject_sender_audience_recipients_and_when(client, marketer, ready_delivery):
    d = ready_delivery(label="Spring sale", subject="Hello there", sender_name="Shop")
    client.force_login(marketer)
    dialog = _dialog(client.get(reverse("deliveries:detail", args=[d.pk])).content.decode(), "confirm-dialog")
    assert "Messages are ready to be sent immediately." in dialog
    assert _recap(dialog) == {
        "Message": f"Spring sale ({d.human_id})",
        "Subject": "Hello there",
        "Sender": "Shop &lt;news@shop.example.com&gt;",
        "Audience": "Audience",
        "Recipients": "5 messages to deliver.",
        "When": "Now",
    }


def test_a_scheduled_send_says_when_in_the_message_time_zone_and_big_counts_are_grouped(client, marketer, ready_delivery):
    at = (timezone.now() + timedelta(days=2)).replace(hour=9, minute=30, second=0, microsecond=0)
    d = ready_delivery(schedule="at", scheduled_at=at, schedule_tz="America/New_York")
    Delivery.objects.filter(pk=d.pk).update(to_deliver_count=3994)
    client.force_login(marketer)
    recap = _recap(_dialog(client.get(reverse("deliveries:detail", args=[d.pk])).content.decode(), "confirm-dialog"))
    from zoneinfo import ZoneInfo

    assert recap["When"] == f"{at.astimezone(ZoneInfo('America/New_York')):%Y-%m-%d %H:%M} (America/New_York)"
    assert recap["Recipients"] == "3,994 messages to deliver."


def test_the_recap_says_how_many_recipients_left_since_preparation_will_be_skipped(client, marketer, ready_delivery):
    from audiences.models import Profile

    d = ready_delivery()
    client.force_login(marketer)
    assert "recap-skipped" not in _dialog(client.get(reverse("deliveries:detail", args=[d.pk])).content.decode(), "confirm-dialog")
    Profile.objects.filter(email="person0@example.com").update(email_denylisted=True)  # unsubscribed since
    Profile.objects.filter(email="person1@example.com").delete()
    recap = _recap(_dialog(client.get(reverse("deliveries:detail", args=[d.pk])).content.decode(), "confirm-dialog"))
    assert recap["Skipped"] == "2 recipients who left since preparation will be skipped."
    assert recap["Recipients"] == "5 messages to deliver."


def test_stop_sending_opens_a_styled_dialog(client, marketer, ready_delivery):
    d = ready_delivery(label="Spring sale")
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS)
    client.force_login(marketer)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "confirm(" not in html and 'data-open-dialog="stop-dialog"' in html
    dialog = _dialog(html, "stop-dialog")
    assert f"Stop the send of “Spring sale” ({d.human_id})? Messages not sent yet will be cancelled" in dialog
    assert f'action="/deliveries/{d.pk}/stop/"' in dialog and ">Cancel</button>" in dialog
