"""Staff views of tracking: profile history partial, a message's tracking logs and tracked URLs, and the API."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db
SALE = "https://shop.example.com/sale"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0"


@pytest.fixture
def recipient():
    return Client(HTTP_USER_AGENT=BROWSER)


@pytest.fixture
def engaged(sent, recipient):
    recipient.get(sent.open_path())
    recipient.get(sent.click_path(SALE))
    Client(HTTP_USER_AGENT="python-requests/2.32").get(sent.click_path(SALE))  # a machine
    return sent


def test_profile_history_partial_shows_the_message_with_its_opens_and_clicks(client, marketer, engaged):
    client.force_login(marketer)
    url = reverse("tracking:profile-history", args=[engaged.profile.pk])
    assert url == f"/profiles/{engaged.profile.pk}/history/"
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Summer sale" in html and f"DM{engaged.delivery.pk}" in html
    assert "Sent" in html
    assert engaged.log.event_at.strftime("%Y-%m-%d %H:%M") in html  # the date it was sent
    row = html.split(f'data-delivery="{engaged.delivery.pk}"')[1]
    assert '<td class="num"' in row
    cells = [c.split(">", 1)[1].split("<", 1)[0] for c in row.split('<td class="num"')[1:3]]
    assert cells == ["1", "1"]  # one open, one click by the person; the machine's click left out
    assert reverse("tracking:mirror", args=[engaged.mirror_path().rsplit("/", 1)[1]]) in html


def test_profile_history_of_a_profile_without_messages(client, marketer, make_sent):
    from audiences.models import Profile

    client.force_login(marketer)
    p = Profile.objects.create(email="new@example.com", email_key="new@example.com")
    assert "No message has been sent to this profile yet." in client.get(reverse("tracking:profile-history", args=[p.pk])).content.decode()


def test_staff_partials_need_a_role(client, make_user, sent):
    for name, arg in (
        ("tracking:profile-history", sent.profile.pk),
        ("tracking:delivery-tracking-logs", sent.delivery.pk),
        ("tracking:delivery-tracked-urls", sent.delivery.pk),
    ):
        url = reverse(name, args=[arg])
        assert client.get(url).status_code == 302  # to the sign-in page
    make_user("nobody")
    client.login(username="nobody", password=PASSWORD)
    assert client.get(reverse("tracking:profile-history", args=[sent.profile.pk])).status_code == 403


def test_tracking_logs_partial_lists_people_and_machines_and_filters(client, ops, engaged):
    client.force_login(ops)
    url = reverse("tracking:delivery-tracking-logs", args=[engaged.delivery.pk])
    html = client.get(url).content.decode()
    assert html.count("<tr>") == 1 + 3
    assert "Known automation: Python requests client" in html
    assert "Big sale" in html and engaged.log.address in html
    human = client.get(url, {"machine": "human"}).content.decode()
    assert human.count("<tr>") == 1 + 2 and "Known automation" not in human
    clicks = client.get(url, {"kind": "click", "machine": "machine"}).content.decode()
    assert clicks.count("<tr>") == 1 + 1
    assert "No tracking log matches these filters." in client.get(url, {"kind": "optout"}).content.decode()


def test_tracked_urls_partial(client, marketer, engaged):
    client.force_login(marketer)
    html = client.get(reverse("tracking:delivery-tracked-urls", args=[engaged.delivery.pk])).content.decode()
    row = html.split("Big sale")[1].split("</tr>")[0]
    assert SALE in row and "Email click" in row
    assert [c.split(">", 1)[1].split("<", 1)[0] for c in row.split('class="num')[1:]] == ["1", "1", "1"]
    assert "Opt-out" in html and "Mirror page" in html and "personalized" in html


def test_api_profile_history_tracking_logs_and_tracked_urls(client, marketer, engaged):
    assert client.get(f"/api/profiles/{engaged.profile.pk}/history/").status_code == 401
    client.force_login(marketer)
    history = client.get(f"/api/profiles/{engaged.profile.pk}/history/").json()
    assert history["count"] == 1
    item = history["results"][0]
    assert (item["delivery_id"], item["status"], item["opens"], item["clicks"], item["opted_out"]) == (engaged.delivery.pk, "sent", 1, 1, False)
    assert item["first_open_at"] and item["first_click_at"]

    logs = client.get(f"/api/deliveries/{engaged.delivery.pk}/tracking-logs/").json()
    assert logs["count"] == 3
    assert sorted((r["kind"], r["is_machine"]) for r in logs["results"]) == [("click", False), ("click", True), ("open", False)]
    assert client.get(f"/api/deliveries/{engaged.delivery.pk}/tracking-logs/?machine=machine").json()["count"] == 1

    urls = {u["url"]: u for u in client.get(f"/api/deliveries/{engaged.delivery.pk}/tracked-urls/").json()}
    assert (urls[SALE]["label"], urls[SALE]["kind"], urls[SALE]["clicks"], urls[SALE]["unique_clicks"], urls[SALE]["machine_clicks"]) == (
        "Big sale", "click", 1, 1, 1,
    )
    missing = client.get("/api/deliveries/999999/tracked-urls/")
    assert missing.status_code == 404 and set(missing.json()) == {"detail", "code"}


def test_demo_seed_adds_tracking_once_and_only_to_the_demo_messages(make_sent):
    from datetime import timedelta
    from types import SimpleNamespace

    from deliveries.models import SendingLog
    from tracking import demo
    from tracking.models import TrackingLog

    first = make_sent(sent_ago=timedelta(days=3))
    for i in range(60):
        make_sent(email=f"p{i}@example.com", delivery=first.delivery, sent_ago=timedelta(days=3))
    someone_elses = make_sent(email="other@example.com")
    seeding = SimpleNamespace(demo_deliveries=[first.delivery.pk], stdout=None)  # the messages the demo made
    demo.seed(seeding)
    count = TrackingLog.objects.count()
    assert count > 0 and TrackingLog.objects.filter(is_machine=False, kind="open").exists()
    assert SendingLog.objects.filter(first_open_at__isnull=False).exists()
    assert not TrackingLog.objects.filter(delivery=someone_elses.delivery).exists()
    demo.seed(seeding)  # idempotent
    assert TrackingLog.objects.count() == count


def test_profile_history_lists_the_newest_message_first(make_sent):
    from datetime import timedelta

    from deliveries.models import SendingLog
    from tracking.selectors import profile_history

    old = make_sent(sent_ago=timedelta(days=3))
    new = make_sent(email="other@example.com", sent_ago=timedelta(hours=2))
    SendingLog.objects.filter(pk=new.log.pk).update(profile=old.profile)  # both sent to the same profile
    assert [row.delivery_id for row in profile_history(profile_id=old.profile.pk)] == [new.delivery.pk, old.delivery.pk]


def test_tracking_logs_say_human_or_machine_with_the_deployment_window_s_words(client, marketer, make_sent):
    from tracking.models import TrackingLog

    sent = make_sent()
    TrackingLog.objects.create(at=sent.log.event_at, delivery=sent.delivery, sending_log=sent.log, kind="open")
    client.force_login(marketer)
    html = client.get(reverse("tracking:delivery-tracking-logs", args=[sent.delivery.pk])).content.decode()
    assert ">Origin<" in html and ">Humans</option>" in html and ">Human</span>" in html
    assert ">People<" not in html and ">Person<" not in html
