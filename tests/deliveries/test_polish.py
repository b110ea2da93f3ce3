"""The words and numbers a first walk through the app reads: numbers grouped one way everywhere,
journal lines that are sentences, plurals without "(s)", one punctuation in audit lines, no empty
card, Paused in its own colour, list counts that match the rows, filter audiences with their size."""

import html as htmllib
import re
from urllib.parse import urljoin, urlparse

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts import roles
from accounts.models import RoleAuditLog
from audiences.models import Audience
from deliveries.models import Delivery, JournalEntry, State
from tests.deliveries.conftest import make_profiles

pytestmark = pytest.mark.django_db

SKIP = ("/logout", "/admin/", "/api/", "/static/", "/dev/", "/export", ".csv", "/edit/", "/new/")
# A number of four digits or more written without grouping: not part of a date, a time, an ID
# (DM1234), a phone number (+33612345678) or a longer token.
RAW_NUMBER = re.compile(r"(?<![\d,.+\-:/#A-Za-z_])(?<!Profile )\d{4,}(?![\d\-:,.]\d)")


def _text(body: str) -> list[str]:
    body = re.sub(r"<script.*?</script>|<style.*?</style>|<textarea.*?</textarea>|<pre.*?</pre>|<iframe[^>]*>", " ", body, flags=re.S)
    return [line.strip() for line in htmllib.unescape(re.sub(r"<[^>]+>", "\n", body)).splitlines() if line.strip()]


def _crawl(client, start="/", limit=80) -> dict[str, list[str]]:
    """Every page reachable from `start` by links and htmx parts (a few profiles only): url -> text lines."""
    seen, todo, pages, profiles = set(), [start], {}, 0
    while todo and len(pages) < limit:
        url = todo.pop(0)
        if url in seen:
            continue
        seen.add(url)
        if re.match(r"^/profiles/\d+/$", url):
            profiles += 1
            if profiles > 3:
                continue
        response = client.get(url)
        assert response.status_code < 500, url
        if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
            continue
        body = response.content.decode()
        pages[url] = _text(body)
        for href in re.findall(r'(?:href|hx-get)="([^"#]+)', body):
            full = urljoin(url, htmllib.unescape(href))
            if not urlparse(full).netloc and not any(s in full for s in SKIP) and "page=" not in full:
                todo.append(full)
    return pages


def test_every_page_of_the_demo_groups_its_numbers_and_reads_as_sentences(client, settings):
    call_command("seed_demo", quiet=True)
    client.login(username="admin", password=settings.DEMO_PASSWORD)
    pages = _crawl(client)
    assert any(u.startswith("/deliveries/") for u in pages) and "/audiences/" in pages and "/profiles/" in pages
    raw, double_stops, plurals = [], [], []
    for url, lines in pages.items():
        for line in lines:
            if RAW_NUMBER.search(line):
                raw.append(f"{url}: {line[:120]}")
            if ".." in line:
                double_stops.append(f"{url}: {line[:120]}")
            if "(s)" in line:
                plurals.append(f"{url}: {line[:120]}")
    assert raw == [] and double_stops == [] and plurals == []
    newsletter = Delivery.objects.get(label="November newsletter")
    detail = pages[f"/deliveries/{newsletter.pk}/"]
    assert f"{newsletter.to_deliver_count:,} of {newsletter.to_deliver_count:,} processed (100%)" in " ".join(detail)


def test_journal_lines_are_sentences_with_curly_quotes(ready_delivery, marketer, django_capture_on_commit_callbacks):
    from deliveries.services import delivery_confirm

    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    lines = list(JournalEntry.objects.filter(delivery=d).values_list("text", flat=True))
    assert "Delivery started by user “Mia Marketer (marketer)”." in lines
    assert [t for t in lines if not t.endswith((".", "…")) or ".." in t or "'" in t] == []


def test_a_template_error_reads_as_one_sentence(ready_delivery):
    d = ready_delivery(html="<p>{% promo %}</p>{{ unsubscribe_url }}")  # Jinja says "Encountered unknown tag …."
    assert d.state == State.PREPARATION_FAILED
    critical = list(JournalEntry.objects.filter(delivery=d, level="critical").values_list("text", flat=True))
    assert critical and all(".." not in t and t.endswith(".") for t in critical), critical


def test_health_counts_workers_in_words():
    from ops.health import check_workers
    from system.services import heartbeat_record

    heartbeat_record(name="worker:celery@one")
    assert check_workers()["detail"] == "1 worker online."
    heartbeat_record(name="worker:celery@two")
    assert check_workers()["detail"] == "2 workers online."


def test_audit_lines_are_one_sentence_each(client, admin, preparer):
    from accounts.services import user_groups_set

    user_groups_set(actor=admin, user=preparer, groups=[roles.APPROVERS])
    entry = RoleAuditLog.objects.latest("id")
    assert entry.summary == "Groups changed: added Approvers; removed Preparers."
    user_groups_set(actor=admin, user=preparer, groups=[])
    assert RoleAuditLog.objects.latest("id").summary == "Groups changed: removed Approvers."
    client.force_login(admin)
    assert "<td>Groups changed: removed Approvers.</td>" in client.get(reverse("users")).content.decode()


@pytest.mark.parametrize(("who", "card"), [("preparer", False), ("ops", False), ("approver", True), ("marketer", True)])
def test_the_home_page_has_no_empty_card(client, make_user, who, card):
    group = {"preparer": roles.PREPARERS, "ops": roles.DELIVERY_SUPERVISORS, "approver": roles.APPROVERS, "marketer": roles.STANDARD_USERS}[who]
    client.force_login(make_user(who, group))
    assert ('id="waiting"' in client.get(reverse("home")).content.decode()) is card


def test_paused_has_its_own_colour(client, marketer, ready_delivery):
    d = ready_delivery()
    Delivery.objects.filter(pk=d.pk).update(state=State.PAUSED)
    client.force_login(marketer)
    row = re.search(rf'<tr data-id="{d.human_id}">.*?</tr>', client.get(reverse("deliveries:list")).content.decode(), re.S).group(0)
    assert 'class="status paused"' in row
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS)
    row = re.search(rf'<tr data-id="{d.human_id}">.*?</tr>', client.get(reverse("deliveries:list")).content.decode(), re.S).group(0)
    assert 'class="status in_progress"' in row
    css = open("static/css/app.css").read()
    assert ".status.paused::before" in css


def test_the_list_counts_are_those_of_its_rows(client, marketer, new_delivery):
    for label in ("Spring sale", "Spring news", "Autumn sale"):
        new_delivery(label=label)
    client.force_login(marketer)
    html = client.get(reverse("deliveries:list") + "?q=spring").content.decode()
    counts = re.search(r'data-testid="status-counts">(.*?)</p>', html, re.S).group(1)
    assert re.search(r'data-status="">All 2</a>', counts) and re.search(r'Editing</span> 2</a>', counts)
    assert html.count('<tr data-id="DM') == 2
    assert 'href="?status=editing&amp;q=spring"' in counts  # the chip keeps the search


def test_a_filter_audience_shows_how_many_profiles_it_has(client, marketer):
    make_profiles([{"email": f"fr{i}@example.com", "language": "fr"} for i in range(3)] + [{"email": "en@example.com", "language": "en"}])
    Audience.objects.create(
        name="French", kind=Audience.Kind.FILTER,
        conditions={"op": "and", "conditions": [{"field": "language", "operator": "equals", "value": "fr"}]},
    )  # fmt: skip
    client.force_login(marketer)
    html = client.get(reverse("audiences:audience-list")).content.decode()
    row = re.search(r"<tr>\s*<td><a[^>]*>French</a>.*?</tr>", html, re.S).group(0)
    assert re.search(r'data-testid="members">3</td>', row)
