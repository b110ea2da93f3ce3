"""The message editor: create, edit, duplicate, with errors next to their fields."""

import pytest
from django.urls import reverse

from deliveries.models import Delivery

pytestmark = pytest.mark.django_db


def form_data(audience, **overrides):
    data = {
        "label": "Autumn sale", "audience": audience.pk, "sender_name": "Shop", "sender_address": "news@shop.example.com",
        "reply_to": "", "subject": "Hello {{ first_name }}", "html": '<p>Hi</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
        "text": "", "schedule": "now", "scheduled_at": "", "schedule_tz": "Europe/Paris", "validity_hours": "48",
        "rate_limit_per_hour": "",
    }  # fmt: skip
    data.update(overrides)
    return data


def test_the_editor_opens_with_the_personalization_hints_and_real_time_zones(client, marketer):
    client.force_login(marketer)
    response = client.get(reverse("deliveries:create"))
    assert response.status_code == 200
    html = response.content.decode()
    for hint in ('{{ first_name|default("friend") }}', "{{ attributes.plan }}", "{{ unsubscribe_url }}", "{{ mirror_url }}"):
        assert f"<code>{hint}</code>" in html
    zones = [value for value, _label in response.context["form"].fields["schedule_tz"].choices]
    assert zones[0] == "UTC" and "Europe/Paris" in zones and "America/New_York" in zones
    assert not {"Factory", "localtime", "Etc/GMT+5", "posixrules"} & set(zones)


def test_create_then_edit_then_duplicate(client, marketer, audience):
    client.force_login(marketer)
    response = client.post(reverse("deliveries:create"), form_data(audience))
    d = Delivery.objects.get(label="Autumn sale")
    assert response.status_code == 302 and response.url == reverse("deliveries:detail", args=[d.pk])
    assert (d.sender_address, d.validity.total_seconds(), d.audience_id) == ("news@shop.example.com", 48 * 3600, audience.pk)

    assert client.get(reverse("deliveries:edit", args=[d.pk])).status_code == 200
    response = client.post(reverse("deliveries:edit", args=[d.pk]), form_data(audience, label="Autumn sale, last days"))
    assert response.status_code == 302
    d.refresh_from_db()
    assert d.label == "Autumn sale, last days"

    response = client.post(reverse("deliveries:action", args=[d.pk, "duplicate"]), follow=True)
    assert response.status_code == 200
    copy = Delivery.objects.exclude(pk=d.pk).get()
    assert response.redirect_chain[-1][0] == reverse("deliveries:edit", args=[copy.pk])
    assert 'value="Autumn sale, last days' in response.content.decode()


def test_bad_input_is_shown_next_to_its_field_and_nothing_is_saved(client, marketer, audience):
    client.force_login(marketer)
    response = client.post(reverse("deliveries:create"), form_data(audience, sender_address="news@", reply_to="not an address"))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["sender_address"] == ["The sender address is not a valid email address."]
    assert errors["reply_to"] == ["The reply-to address is not a valid email address."]
    html = response.content.decode()
    assert '<div class="error" role="alert">The sender address is not a valid email address.</div>' in html
    assert not Delivery.objects.exists()

    response = client.post(reverse("deliveries:create"), form_data(audience, schedule="at", scheduled_at=""))
    assert response.status_code == 400
    assert response.context["form"].errors["scheduled_at"] == ["Choose the date and time of the send, or choose to send once confirmed."]
