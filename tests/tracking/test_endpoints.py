"""The recipient's endpoints: open pixel, click redirect, unsubscribe, mirror page."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from deliveries.models import TrackedUrl
from deliveries.tokens import PIXEL, make_token
from tracking.models import TrackingLog
from tracking.views import GIF

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
SALE = "https://shop.example.com/sale"


@pytest.fixture
def client():
    # What a mail client or browser sends: no session, no CSRF token, a browser user agent.
    return Client(enforce_csrf_checks=True, HTTP_USER_AGENT=BROWSER, REMOTE_ADDR="203.0.113.9")


def logs(**filters):
    return list(TrackingLog.objects.filter(**filters).values_list("kind", "is_machine"))


# --- open pixel ---------------------------------------------------------------------------------
def test_open_pixel_answers_a_43_byte_gif_without_caching_and_records_the_first_open_once(client, sent):
    response = client.get(sent.open_path())
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response.content == GIF and len(GIF) == 43
    assert "no-store" in response["Cache-Control"] and response["Pragma"] == "no-cache"
    assert "Set-Cookie" not in response  # no session
    first = sent.refresh().log.first_open_at
    assert first is not None and sent.log.first_click_at is None

    client.get(sent.open_path())
    assert sent.refresh().log.first_open_at == first
    assert logs(sending_log=sent.log) == [("open", False), ("open", False)]
    stored = TrackingLog.objects.first()
    assert stored.user_agent == BROWSER
    assert stored.ip_hash and "203.0.113.9" not in stored.ip_hash


def test_open_pixel_and_click_cost_one_or_two_queries(client, sent, django_assert_num_queries):
    from django.db import connection

    postgres = connection.vendor == "postgresql"
    # PostgreSQL: the pixel and a click are one statement each (read, insert, first times).
    # Elsewhere: a read, an insert and, the first time, an UPDATE.
    with django_assert_num_queries(1 if postgres else 3):
        client.get(sent.open_path())
    with django_assert_num_queries(1 if postgres else 2):
        client.get(sent.open_path())
    with django_assert_num_queries(1 if postgres else 3):
        client.get(sent.click_path(SALE))
    with django_assert_num_queries(1 if postgres else 2):
        client.get(sent.click_path(SALE))


# --- click --------------------------------------------------------------------------------------
def test_click_redirects_to_its_stored_url_and_counts_as_an_open(client, sent):
    response = client.get(sent.click_path(SALE) + "?next=https://evil.example/&url=https://evil.example/")
    assert response.status_code == 302
    assert response["Location"] == SALE
    sent.refresh()
    assert sent.log.first_click_at is not None
    assert sent.log.first_open_at == sent.log.first_click_at
    log = TrackingLog.objects.get()
    assert (log.kind, log.tracked_url_id, log.is_machine) == ("click", sent.url_id(SALE), False)

    first = sent.log.first_click_at
    assert client.get(sent.click_path("https://shop.example.com/faq"))["Location"] == "https://shop.example.com/faq"
    assert sent.refresh().log.first_click_at == first  # set once


def test_personalized_link_is_rendered_for_the_tokens_recipient(client, sent, make_sent):
    url = "https://example.com/account/{{ attributes.account }}"
    assert sent.urls[url].is_template
    assert client.get(sent.click_path(url))["Location"] == "https://example.com/account/A-42"
    other = make_sent(email="bob@example.com", delivery=sent.delivery, first_name="Bob", attributes={"account": "B-7"})
    assert client.get(other.click_path(url))["Location"] == "https://example.com/account/B-7"


def test_personalized_link_whose_rendering_changes_the_host_is_refused(client, make_sent):
    # Preparation leaves such links untracked (test_links); a stored one is still refused at click time.
    sent = make_sent(attributes={"account": "x@evil.example/", "host": "evil.example"})
    rows = [
        TrackedUrl.objects.create(delivery=sent.delivery, url=url, label="x", is_template=True)
        for url in ("https://example.com{{ attributes.account }}", "https://{{ attributes.host }}/x", "{{ attributes.host }}")
    ]
    for row in rows:
        response = client.get(f"/t/c/{make_token(sent.log.pk, row.pk)}")
        assert response.status_code == 404
        assert "Location" not in response
    assert TrackingLog.objects.count() == 0


# --- tokens -------------------------------------------------------------------------------------
def tampered_tokens(sent, other):
    good = make_token(sent.log.pk, sent.url_id(SALE))
    body, _, sig = good.rpartition(".")
    return {
        "signature changed": f"{body}.{('A' if sig[0] != 'A' else 'B')}{sig[1:]}",
        "truncated": good[:-3],
        "log id changed": f"{int(body.split('.')[0], 36) + 1:x}.{body.split('.')[1]}.{sig}",
        "empty signature": f"{body}.",
        "garbage": "not-a-token",
        "too long": "a" * 80,
        "unknown log (validly signed)": make_token(999_999, sent.url_id(SALE)),
        "unknown url (validly signed)": make_token(sent.log.pk, 999_999),
        "another message's link": make_token(sent.log.pk, other.url_id(SALE)),
        "no url (an open token)": make_token(sent.log.pk),
    }


def test_tampered_or_unknown_click_tokens_answer_404_write_nothing_and_never_redirect(client, sent, make_sent):
    other = make_sent(email="zed@example.com")
    for name, token in tampered_tokens(sent, other).items():
        response = client.get(f"/t/c/{token}")
        assert response.status_code == 404, name
        assert "Location" not in response, name
        assert b"This link is not valid" in response.content, name
    assert TrackingLog.objects.count() == 0
    assert sent.refresh().log.first_open_at is None


def test_tampered_tokens_on_the_other_endpoints(client, sent, make_sent):
    other = make_sent(email="zed@example.com")
    log_token = make_token(sent.log.pk)
    bad = [t for t in tampered_tokens(sent, other).values() if t != log_token] + [log_token[:-1], log_token + "x"]
    for token in bad:
        pixel = client.get(f"/t/o/{token}.gif")
        assert pixel.status_code == 200 and pixel.content == GIF  # the pixel still answers its GIF
        for path in (f"/t/u/{token}", f"/t/m/{token}"):
            response = client.get(path)
            assert response.status_code == 404 and "Location" not in response, path
        assert client.post(f"/t/u/{token}", {"List-Unsubscribe": "One-Click"}).status_code == 404
    assert TrackingLog.objects.count() == 0
    assert not sent.refresh().profile.email_denylisted


# --- unsubscribe --------------------------------------------------------------------------------
def test_unsubscribe_get_shows_a_confirmation_and_changes_nothing_then_post_opts_out(client, sent):
    page = client.get(sent.unsubscribe_path())
    assert page.status_code == 200
    assert b"Stop receiving emails from Shop" in page.content
    assert page.content.count(b"<button") == 1
    assert TrackingLog.objects.count() == 0 and not sent.refresh().profile.email_denylisted

    done = client.post(sent.unsubscribe_path())
    assert done.status_code == 200
    assert b"You are unsubscribed" in done.content
    sent.refresh()
    assert sent.profile.email_denylisted
    assert sent.log.first_open_at is not None  # an opt-out counts as an open
    assert logs() == [("optout", False)]

    client.post(sent.unsubscribe_path())  # again: nothing more
    assert TrackingLog.objects.count() == 1
    assert b"already unsubscribed" in client.get(sent.unsubscribe_path()).content


def test_one_click_unsubscribe_post_needs_no_cookie_and_no_csrf_token(sent):
    # RFC 8058: the mailbox provider POSTs "List-Unsubscribe=One-Click" to the List-Unsubscribe URL.
    provider = Client(enforce_csrf_checks=True, HTTP_USER_AGENT="Google-List-Unsubscribe")
    response = provider.post(
        sent.unsubscribe_path(), data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert sent.refresh().profile.email_denylisted
    assert logs() == [("optout", False)]
    assert "Set-Cookie" not in response


# --- mirror page --------------------------------------------------------------------------------
def test_mirror_page_shows_the_recipients_copy_with_tracking_and_counts_as_an_open(client, sent):
    response = client.get(sent.mirror_path())
    assert response.status_code == 200
    html = response.content.decode()
    assert "Hello Ann," in html
    assert f"/t/c/{make_token(sent.log.pk, sent.url_id(SALE))}" in html
    assert f"/t/o/{make_token(sent.log.pk, purpose=PIXEL)}.gif" in html
    assert "sandbox" in response["Content-Security-Policy"]
    assert logs() == [("mirror", False)]
    assert sent.refresh().log.first_open_at is not None


def test_staff_previewing_the_mirror_page_records_nothing(client, sent, marketer):
    client.force_login(marketer)
    assert client.get(sent.mirror_path()).status_code == 200
    assert TrackingLog.objects.count() == 0 and sent.refresh().log.first_open_at is None


# --- machine traffic ----------------------------------------------------------------------------
def test_known_scanner_user_agent_is_flagged_and_sets_no_first_time(sent):
    scanner = Client(HTTP_USER_AGENT="Mozilla/5.0 (compatible; Barracuda Sentinel)")
    assert scanner.get(sent.click_path(SALE))["Location"] == SALE  # still redirected
    scanner.get(sent.open_path())
    assert logs() == [("open", True), ("click", True)] or sorted(logs()) == [("click", True), ("open", True)]
    assert TrackingLog.objects.filter(machine_reason__contains="Barracuda").count() == 2
    sent.refresh()
    assert sent.log.first_open_at is None and sent.log.first_click_at is None


def test_apple_privacy_proxy_open_is_flagged(sent):
    Client(HTTP_USER_AGENT="Mozilla/5.0").get(sent.open_path())
    assert TrackingLog.objects.get().machine_reason == "Known proxy: Apple Mail Privacy Protection prefetch"


def test_hit_within_two_seconds_of_delivery_is_flagged(client, make_sent, settings):
    fresh = make_sent(sent_ago=timedelta(seconds=0))
    client.get(fresh.open_path())
    assert TrackingLog.objects.get().machine_reason == "Within 2 s of delivery"
    assert fresh.refresh().log.first_open_at is None
    settings.TRACKING_MACHINE_DELAY_SECONDS = 0
    client.get(fresh.open_path())
    assert fresh.refresh().log.first_open_at is not None


def test_three_links_clicked_within_one_second_are_all_flagged_and_left_out_of_unique_counts(client, sent):
    from tracking.selectors import delivery_tracked_urls, profile_history

    for url in (SALE, "https://shop.example.com/new", "https://shop.example.com/faq"):
        assert client.get(sent.click_path(url)).status_code == 302
    assert logs() == [("click", True)] * 3
    assert set(TrackingLog.objects.values_list("machine_reason", flat=True)) == {"3 links clicked within 1 s"}
    sent.refresh()
    assert sent.log.first_click_at is None and sent.log.first_open_at is None
    counts = {u.url: (u.clicks, u.unique_clicks, u.machine_clicks) for u in delivery_tracked_urls(delivery_id=sent.delivery.pk)}
    assert counts[SALE] == (0, 0, 1)
    row = profile_history(profile_id=sent.profile.pk).get()
    assert (row.opens, row.clicks) == (0, 0)


def test_clicks_further_apart_than_the_burst_window_stay_human(client, sent):
    client.get(sent.click_path(SALE))
    TrackingLog.objects.update(at=timezone.now() - timedelta(seconds=5))
    client.get(sent.click_path("https://shop.example.com/new"))
    client.get(sent.click_path("https://shop.example.com/faq"))
    assert logs() == [("click", False)] * 3


def test_tracked_urls_of_the_message_count_people_once_per_recipient(client, sent, make_sent):
    from tracking.selectors import delivery_tracked_urls

    bob = make_sent(email="bob@example.com", delivery=sent.delivery)
    client.get(sent.click_path(SALE))
    client.get(sent.click_path(SALE))
    client.get(bob.click_path(SALE))
    client.post(sent.unsubscribe_path())
    rows = {u.url: (u.kind, u.clicks, u.unique_clicks) for u in delivery_tracked_urls(delivery_id=sent.delivery.pk)}
    assert rows[SALE] == (TrackedUrl.Kind.CLICK, 3, 2)
    assert rows["{{ unsubscribe_url }}"] == (TrackedUrl.Kind.OPTOUT, 1, 1)
    assert rows["{{ mirror_url }}"] == (TrackedUrl.Kind.MIRROR, 0, 0)


def test_open_pixel_is_answered_even_when_recording_fails(client, sent, monkeypatch):
    from tracking import services

    def broken(**kwargs):
        raise services.transaction.TransactionManagementError("database unavailable")

    monkeypatch.setattr(services, "tracking_open", broken)
    response = client.get(sent.open_path())
    assert response.status_code == 200 and response.content == GIF


def test_head_requests_resolve_but_record_nothing(client, sent):
    assert client.head(sent.open_path()).status_code == 200
    response = client.head(sent.click_path(SALE))
    assert (response.status_code, response["Location"]) == (302, SALE)
    assert client.head(sent.click_path(SALE)[:-2]).status_code == 404
    assert TrackingLog.objects.count() == 0 and sent.refresh().log.first_open_at is None
