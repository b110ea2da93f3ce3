"""Pages: who may see and change what (DOMAIN.md §3), and what each page shows."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audiences.models import Audience, AudienceMember, Profile, Quarantine, QuarantineChange
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def login(client, user):
    client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def ann(make_profile):
    return make_profile("Ann@Example.com", first_name="Ann", last_name="Lee", language="fr", attributes={"tier": "gold"})


def test_any_role_reads_profiles_and_audiences_and_searches(client, approver, ann, make_profile):
    make_profile("bob@example.org", first_name="Bob")
    login(client, approver)
    page = client.get(reverse("audiences:profile-list"), {"q": "lee"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "Ann@example.com" in body and "bob@example.org" not in body
    assert "New profile" not in body  # reading only
    detail = client.get(reverse("audiences:profile-detail", args=[ann.pk])).content.decode()
    assert "tier" in detail and "gold" in detail and "Message history" in detail
    assert client.get(reverse("audiences:audience-list")).status_code == 200


def test_creating_a_profile_needs_prepare_deliveries(client, approver, preparer):
    data = {"email": "New@Example.COM", "first_name": "Nina", "attributes": "tier = silver"}
    assert login(client, approver).post(reverse("audiences:profile-create"), data).status_code == 403
    client.logout()
    response = login(client, preparer).post(reverse("audiences:profile-create"), data)
    profile = Profile.objects.get()
    assert response.url == reverse("audiences:profile-detail", args=[profile.pk])
    assert (profile.email, profile.email_key, profile.attributes) == ("New@example.com", "new@example.com", {"tier": "silver"})
    again = client.post(reverse("audiences:profile-create"), {**data, "email": "new@example.com"})
    assert again.status_code == 400 and "already has the address" in again.content.decode()


def test_a_list_audience_adds_and_removes_members(client, preparer, ann):
    login(client, preparer)
    client.post(reverse("audiences:audience-create"), {"name": "VIP", "kind": "list"})
    audience = Audience.objects.get(name="VIP")
    client.post(reverse("audiences:audience-members-add", args=[audience.pk]), {"emails": "ann@example.com, ghost@example.com"})
    assert audience.members.count() == 0  # an unknown address refuses the whole addition
    response = client.post(reverse("audiences:audience-members-add", args=[audience.pk]), {"emails": "ANN@example.com"}, follow=True)
    assert "1 profile(s) added." in response.content.decode()
    assert list(audience.members.all()) == [ann]
    client.post(reverse("audiences:audience-members-remove", args=[audience.pk, ann.pk]))
    assert audience.members.count() == 0


def test_a_filter_audience_is_built_with_a_live_count(client, preparer, ann, make_profile):
    make_profile("bob@example.org", language="en")
    login(client, preparer)
    response = client.post(reverse("audiences:audience-create"), {"name": "French", "kind": "filter"})
    audience = Audience.objects.get(name="French")
    assert response.url == reverse("audiences:audience-edit", args=[audience.pk])
    form = {"name": "French", "description": "", "op": "and", "g0-op": "and",
            "g0-c0-field": "language", "g0-c0-operator": "equals", "g0-c0-value": "fr"}
    count = client.post(reverse("audiences:conditions-count"), form, HTTP_HX_REQUEST="true")
    assert 'data-testid="live-count">1<' in count.content.decode()
    builder = client.post(reverse("audiences:conditions-builder"), {**form, "action": "add:0"}, HTTP_HX_REQUEST="true")
    assert "g0-c1-field" in builder.content.decode()
    client.post(reverse("audiences:audience-edit", args=[audience.pk]), {**form, "action": "save"})
    audience.refresh_from_db()
    assert audience.conditions == {"op": "and", "conditions": [
        {"op": "and", "conditions": [{"field": "language", "operator": "equals", "value": "fr"}]}]}
    detail = client.get(reverse("audiences:audience-detail", args=[audience.pk])).content.decode()
    assert 'id="audience-size">1<' in detail and "Ann@example.com" in detail


def test_import_needs_generic_import(client, approver, ops):
    upload = {"file": SimpleUploadedFile("p.csv", b"email\na@example.com\n")}
    for user in (approver, ops):
        login(client, user)
        assert client.get(reverse("audiences:import-create")).status_code == 403
        assert client.post(reverse("audiences:import-create"), upload).status_code == 403
        client.logout()
    assert not Profile.objects.exists()


def test_an_import_shows_its_report_and_the_rejected_rows_as_csv(client, preparer, django_capture_on_commit_callbacks):
    login(client, preparer)
    content = b"email,phone\ngood@example.com,+33612345678\nbad-address,\nok@example.com,12\n"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("audiences:import-create"), {"file": SimpleUploadedFile("p.csv", content)})
    page = client.get(response.url).content.decode()
    assert "Finished" in page and "bad-address" in page and "not a phone number" in page
    csv_response = client.get(response.url + "rejected.csv")
    text = b"".join(csv_response.streaming_content).decode("utf-8-sig")
    assert text.splitlines()[1].startswith("3,email,bad-address,")
    assert text.splitlines()[2].startswith("4,phone,12,")


def test_a_refused_file_says_why_on_the_form(client, preparer):
    login(client, preparer)
    response = client.post(reverse("audiences:import-create"), {"file": SimpleUploadedFile("p.csv", b"name\nAnn\n")})
    assert response.status_code == 400
    assert "no “email” column" in response.content.decode()


def test_the_quarantine_page_needs_administration_or_monitor_deliveries(client, marketer, approver, ops, admin):
    row = Quarantine.objects.create(address="jane@example.com", channel="email", status="quarantine", error_count=1)
    for user in (marketer, approver):
        login(client, user)
        assert client.get(reverse("audiences:quarantine-list")).status_code == 403
        assert client.post(reverse("audiences:quarantine-status", args=[row.pk]), {"status": "valid"}).status_code == 403
        client.logout()
    login(client, ops)
    page = client.get(reverse("audiences:quarantine-list"), {"status": "quarantine", "address": "JANE"})
    assert "jane@example.com" in page.content.decode()
    client.post(reverse("audiences:quarantine-status", args=[row.pk]), {"status": "valid"})
    row.refresh_from_db()
    assert (row.status, row.error_count) == ("valid", 0)
    change = QuarantineChange.objects.get()
    assert (change.actor, change.before, change.after) == (ops, "quarantine", "valid")
    client.logout()
    login(client, admin)
    client.post(reverse("audiences:quarantine-delete", args=[row.pk]))
    assert not Quarantine.objects.exists()
    assert "Deleted" in client.get(reverse("audiences:quarantine-list")).content.decode()


def test_nav_links_follow_roles(client, marketer, ops):
    body = login(client, marketer).get(reverse("audiences:profile-list")).content.decode()
    assert ">Profiles<" in body and ">Audiences<" in body and ">Quarantine<" not in body
    client.logout()
    assert ">Quarantine<" in login(client, ops).get(reverse("audiences:profile-list")).content.decode()


def test_list_members_page_and_filter_sample(client, marketer, ann):
    audience = Audience.objects.create(name="L", kind="list")
    AudienceMember.objects.create(audience=audience, profile=ann)
    body = login(client, marketer).get(reverse("audiences:audience-detail", args=[audience.pk])).content.decode()
    assert "Ann@example.com" in body and "Remove Ann@example.com" in body


def test_demo_data_is_varied_and_idempotent(django_assert_max_num_queries):
    from audiences import demo

    demo.seed()
    counts = (Profile.objects.count(), Audience.objects.count(), AudienceMember.objects.count(), Quarantine.objects.count())
    with django_assert_max_num_queries(100):  # bulk statements (SQLite splits them into more batches)
        demo.seed()
    assert (Profile.objects.count(), Audience.objects.count(), AudienceMember.objects.count(), Quarantine.objects.count()) == counts
    assert counts[0] == 5000 + len(demo.INVALID) + 3 and counts[1] == 3
    assert Profile.objects.values("language").distinct().count() >= 6
    assert Profile.objects.values("time_zone").distinct().count() >= 10
    from audiences.selectors import audience_count

    french = Audience.objects.get(kind="filter")
    assert 0 < audience_count(audience=french) < 5000


def test_an_audience_a_message_uses_cannot_be_deleted(client, preparer):
    from deliveries.models import Delivery

    used = Audience.objects.create(name="Used", kind="list")
    unused = Audience.objects.create(name="Unused", kind="list")
    Delivery.objects.create(label="Spring sale", audience=used)
    login(client, preparer)
    response = client.post(reverse("audiences:audience-delete", args=[used.pk]), follow=True)
    assert "is used by a message: choose another audience there first." in response.content.decode()
    client.post(reverse("audiences:audience-delete", args=[unused.pk]))
    assert list(Audience.objects.values_list("name", flat=True)) == ["Used"]


def test_the_import_page_polls_while_running_and_reloads_when_done(client, marketer):
    from audiences.models import ImportJob

    job = ImportJob.objects.create(file_name="big.csv", size=1000, bytes_done=400, progress=32, rows_read=4000,
                                   status=ImportJob.Status.RUNNING, created_by=marketer)
    login(client, marketer)
    url = reverse("audiences:import-detail", args=[job.pk])
    running = client.get(url, HTTP_HX_REQUEST="true")
    body = running.content.decode()
    assert 'hx-trigger="every 1s"' in body and 'aria-valuenow="32"' in body and "4,000" in body
    assert "<html" not in body and "HX-Refresh" not in running
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.DONE)
    done = client.get(url, HTTP_HX_REQUEST="true")
    assert done["HX-Refresh"] == "true"
    assert "every 1s" not in client.get(url).content.decode()


def test_windows_line_endings_and_quoted_headers(marketer, run_import):
    job = run_import(marketer, b'"email","First Name"\r\n"ann@example.com","Ann"\r\n\r\n')
    assert (job.status, job.rows_read, job.created_count) == ("done", 1, 1)
    assert Profile.objects.get().first_name == "Ann"
