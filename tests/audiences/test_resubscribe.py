"""Issue 15, item 7: re-subscribing a person who opted out needs a reason, Administration, and is
audited. Before, a preparer cleared the unsubscribe flag silently, on the page and through the API."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from audiences.models import ConsentChange, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def opted_out(db):
    return Profile.objects.create(email="gone@example.com", email_key="gone@example.com", first_name="Gone", email_denylisted=True)


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_preparer_cannot_clear_the_flag_through_the_api(preparer, opted_out):
    response = api(preparer).patch(f"/api/profiles/{opted_out.pk}/", {"email_denylisted": False}, format="json")
    assert response.status_code == 403
    assert "Only an administrator can re-subscribe a person who opted out" in response.json()["detail"]
    opted_out.refresh_from_db()
    assert opted_out.email_denylisted and not ConsentChange.objects.exists()


def test_an_admin_needs_a_reason_and_it_is_recorded(admin, opted_out):
    response = api(admin).patch(f"/api/profiles/{opted_out.pk}/", {"email_denylisted": False}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "reason_required"
    opted_out.refresh_from_db()
    assert opted_out.email_denylisted
    response = api(admin).patch(
        f"/api/profiles/{opted_out.pk}/",
        {"email_denylisted": False, "resubscribe_reason": "Asked by phone on 3 March, ticket 481"},
        format="json",
    )
    assert response.status_code == 200 and response.json()["email_denylisted"] is False
    change = ConsentChange.objects.get()
    assert (change.profile_id, change.channel, change.denylisted, change.actor, change.source) == (opted_out.pk, "email", False, admin, "api")
    assert change.reason == "Asked by phone on 3 March, ticket 481"


def test_the_page_keeps_the_flag_for_a_preparer_and_audits_the_admin(client, preparer, admin, opted_out):
    client.force_login(preparer)
    url = reverse("audiences:profile-edit", args=[opted_out.pk])
    page = client.get(url).content.decode()
    assert "only an administrator can re-subscribe them" in page
    client.post(url, {"email": opted_out.email, "first_name": "Gone"})  # the box unticked: it is read-only for them
    opted_out.refresh_from_db()
    assert opted_out.email_denylisted and not ConsentChange.objects.exists()

    client.force_login(admin)
    refused = client.post(url, {"email": opted_out.email, "first_name": "Gone"})
    assert refused.status_code == 400 and "Say why this person is re-subscribed" in refused.content.decode()
    client.post(url, {"email": opted_out.email, "first_name": "Gone", "resubscribe_reason": "Wrote to support"})
    opted_out.refresh_from_db()
    assert not opted_out.email_denylisted
    detail = client.get(reverse("audiences:profile-detail", args=[opted_out.pk])).content.decode()
    assert "Re-subscribed" in detail and "Wrote to support" in detail


def test_setting_the_flag_is_audited_too(preparer, opted_out):
    other = Profile.objects.create(email="stay@example.com", email_key="stay@example.com")
    assert api(preparer).patch(f"/api/profiles/{other.pk}/", {"email_denylisted": True}, format="json").status_code == 200
    change = ConsentChange.objects.get()
    assert change.denylisted and change.actor == preparer and change.reason == ""
