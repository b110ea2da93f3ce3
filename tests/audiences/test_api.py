"""The API: same permissions and error shape as the pages."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from audiences.models import Audience, Profile, Quarantine, QuarantineChange

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_profiles_list_search_create_retrieve_update(marketer, approver, make_profile):
    make_profile("ann@example.com", first_name="Ann")
    assert api(approver).get("/api/profiles/", {"q": "ann"}).json()["count"] == 1
    refused = api(approver).post("/api/profiles/", {"email": "x@example.com"}, format="json")
    assert refused.status_code == 403 and "Prepare deliveries" in refused.json()["detail"]
    created = api(marketer).post("/api/profiles/", {"email": "Zoe@Example.COM", "time_zone": "Europe/Paris"}, format="json")
    assert created.status_code == 201 and created.json()["email"] == "Zoe@example.com"
    pk = created.json()["id"]
    bad = api(marketer).patch(f"/api/profiles/{pk}/", {"time_zone": "Mars/Base"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_time_zone" and "IANA" in bad.json()["detail"]
    assert api(marketer).patch(f"/api/profiles/{pk}/", {"first_name": "Zoé"}, format="json").json()["first_name"] == "Zoé"
    assert api(approver).get(f"/api/profiles/{pk}/").json()["first_name"] == "Zoé"


def test_audiences_filters_members_and_count(marketer, approver, make_profile):
    ann = make_profile("ann@example.com", language="fr")
    make_profile("bob@example.com", language="en")
    created = api(marketer).post("/api/audiences/", {
        "name": "French", "kind": "filter",
        "conditions": {"op": "and", "conditions": [{"field": "language", "operator": "equals", "value": "fr"}]},
    }, format="json")
    assert created.status_code == 201 and created.json()["size"] == 1
    fid = created.json()["id"]
    assert api(approver).get(f"/api/audiences/{fid}/count/").json() == {"count": 1}
    wrong = api(marketer).put(f"/api/audiences/{fid}/", {"conditions": {"op": "and", "conditions": [
        {"field": "shoe_size", "operator": "equals", "value": "42"}]}}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_condition"
    lid = api(marketer).post("/api/audiences/", {"name": "L", "kind": "list"}, format="json").json()["id"]
    assert api(marketer).post(f"/api/audiences/{lid}/members/", {"emails": ["ANN@example.com"]}, format="json").json() == {"count": 1}
    assert api(approver).get(f"/api/audiences/{lid}/members/").json()["results"][0]["id"] == ann.pk
    assert api(marketer).delete(f"/api/audiences/{lid}/members/", {"profile_ids": [ann.pk]}, format="json").json() == {"count": 0}
    on_filter = api(marketer).post(f"/api/audiences/{fid}/members/", {"profile_ids": [ann.pk]}, format="json")
    assert on_filter.status_code == 409 and on_filter.json()["code"] == "audience_is_filter"


def test_import_through_the_api(marketer, approver, django_capture_on_commit_callbacks):
    audience = Audience.objects.create(name="L", kind="list")
    upload = SimpleUploadedFile("p.csv", b"email,first_name\na@example.com,Ann\nnope,Bob\n")
    refused = api(approver).post(f"/api/audiences/{audience.pk}/imports/", {"file": upload}, format="multipart")
    assert refused.status_code == 403 and "Generic import" in refused.json()["detail"]
    upload.seek(0)
    with django_capture_on_commit_callbacks(execute=True):
        accepted = api(marketer).post(f"/api/audiences/{audience.pk}/imports/", {"file": upload}, format="multipart")
    assert accepted.status_code == 202
    report = api(approver).get(f"/api/imports/{accepted.json()['id']}/").json()
    assert (report["status"], report["rows_read"], report["created_count"], report["rejected_count"]) == ("done", 2, 1, 1)
    assert report["rejections"][0]["line"] == 3 and report["rejections"][0]["column"] == "email"
    empty = api(marketer).post(f"/api/audiences/{audience.pk}/imports/", {"file": SimpleUploadedFile("e.csv", b"")}, format="multipart")
    assert empty.status_code == 400
    assert set(empty.json()) >= {"detail", "code"}


def test_quarantine_list_filter_update_delete(ops, marketer):
    row = Quarantine.objects.create(address="jane@example.com", channel="email", status="quarantine", error_count=1)
    Quarantine.objects.create(address="bob@example.com", channel="email", status="erroneous", error_count=2)
    assert api(marketer).get("/api/quarantine/").status_code == 403
    listed = api(ops).get("/api/quarantine/", {"status": "quarantine"}).json()
    assert [r["address"] for r in listed["results"]] == ["jane@example.com"]
    updated = api(ops).patch(f"/api/quarantine/{row.pk}/", {"status": "valid"}, format="json")
    assert updated.json()["status"] == "valid"
    assert QuarantineChange.objects.get().source == "api"
    bad = api(ops).patch(f"/api/quarantine/{row.pk}/", {"status": "gone"}, format="json")
    assert bad.status_code == 400 and "not a quarantine status" in bad.json()["detail"]
    assert api(ops).delete(f"/api/quarantine/{row.pk}/").status_code == 204
    assert not Profile.objects.exists() and Quarantine.objects.count() == 1
