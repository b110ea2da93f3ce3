import pytest
from rest_framework.test import APIClient

from deliveries.models import Delivery, State

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(marketer):
    client = APIClient()
    client.force_authenticate(marketer)
    return client


def payload(audience, **extra):
    return {"label": "API message", "sender_name": "Shop", "sender_address": "news@shop.example.com",
            "subject": "Hi {{ first_name }}", "html": "<p>Hi {{ unsubscribe_url }}</p>", "audience": audience.pk, **extra}  # fmt: skip


def test_create_prepare_confirm_and_read_logs_through_the_api(api, audience, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    created = api.post("/api/deliveries/", payload(audience, validity_hours=12), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    pk = body["id"]
    assert body["human_id"] == f"DM{pk}" and body["state"] == "editing" and body["validity_hours"] == 12
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(f"/api/deliveries/{pk}/prepare/").json()["state"] == "preparing"
    assert api.get(f"/api/deliveries/{pk}/").json()["state"] == "ready"
    with django_capture_on_commit_callbacks(execute=True):
        confirmed = api.post(f"/api/deliveries/{pk}/confirm/", {"revision": body["revision"]}, format="json")
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "in_progress"
    assert api.get(f"/api/deliveries/{pk}/").json()["state"] == "finished"
    logs = api.get(f"/api/deliveries/{pk}/sending-logs/?status=sent").json()
    assert logs["count"] == 5 and {r["status"] for r in logs["results"]} == {"sent"}
    assert api.get(f"/api/deliveries/{pk}/sending-logs/?status=failed").json()["count"] == 0
    journal = [e["text"] for e in api.get(f"/api/deliveries/{pk}/journal/").json()["results"]]
    assert "Delivery finished (all messages have been processed)." in journal
    assert api.get(f"/api/deliveries/{pk}/exclusion-causes/").json() == []


def test_second_confirmation_is_409_with_the_sentence(api, ready_delivery, django_capture_on_commit_callbacks, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(f"/api/deliveries/{d.pk}/confirm/").status_code == 200
    again = api.post(f"/api/deliveries/{d.pk}/confirm/")
    assert again.status_code == 409
    assert again.json() == {"detail": "This message has already been confirmed.", "code": "already_confirmed"}


def test_wrong_state_is_409_naming_the_state(api, new_delivery):
    d = new_delivery()
    response = api.post(f"/api/deliveries/{d.pk}/pause/")
    assert response.status_code == 409
    assert response.json() == {"detail": "You cannot pause this message while it is “Editing”.", "code": "invalid_state"}


def test_update_after_preparation_goes_back_to_editing(api, ready_delivery):
    d = ready_delivery()
    response = api.patch(f"/api/deliveries/{d.pk}/", {"subject": "New"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "editing"
    stale = api.post(f"/api/deliveries/{d.pk}/confirm/", {"revision": d.revision}, format="json")
    assert stale.status_code == 409 and stale.json()["code"] == "changed_after_preparation"


def test_bad_input_is_400_with_a_sentence(api, audience):
    response = api.post("/api/deliveries/", payload(audience, validity_hours=100, sender_address="nope"), format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("validity_hours: ")
    response = api.post("/api/deliveries/", payload(audience, schedule="at"), format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "Choose the date and time of the send, or choose to send once confirmed."


def test_preparer_can_create_but_not_confirm_and_an_approver_cannot_create(ready_delivery, preparer, approver, audience):
    client = APIClient()
    client.force_authenticate(approver)
    response = client.post("/api/deliveries/", payload(audience), format="json")
    assert response.status_code == 403 and "Prepare deliveries" in response.json()["detail"]
    client.force_authenticate(preparer)
    assert client.post("/api/deliveries/", payload(audience), format="json").status_code == 201
    d = ready_delivery()
    assert client.post(f"/api/deliveries/{d.pk}/confirm/").status_code == 403
    assert Delivery.objects.get(pk=d.pk).state == State.READY


def test_duplicate_and_list_filters(api, new_delivery):
    d = new_delivery()
    copy = api.post(f"/api/deliveries/{d.pk}/duplicate/")
    assert copy.status_code == 201 and copy.json()["label"] == "Spring sale (copy)"
    listed = api.get("/api/deliveries/?status=editing").json()
    assert listed["count"] == 2
    assert api.get(f"/api/deliveries/?q=DM{d.pk}").json()["count"] == 1
    assert api.get("/api/deliveries/?status=finished").json()["count"] == 0
