"""Query counts pinned on the pages people keep open: the message page (and the message list), the
Deployment window and the profile's message history. Each costs the same whatever the number of
recipients, journal lines, messages or rows (no query per row), and no more than its pin: a new
query on these pages has to be a decision (raise the pin and say why in the commit)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deliveries.models import SendingLog
from tests.deliveries.conftest import make_audience, make_profiles
from tests.factories import JournalEntryFactory, ProfileFactory, TrackingLogFactory

pytestmark = pytest.mark.django_db

# session, user, the user's roles: what every signed-in page reads first
SIGNED_IN = 3


def queries(client, url) -> int:
    assert client.get(url).status_code == 200  # warm: the first request of a session reads more
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def pinned(client, url, most: int, django_assert_max_num_queries) -> str:
    client.get(url)  # warm
    with django_assert_max_num_queries(most):
        return client.get(url).content.decode()


def test_the_message_page_costs_the_same_for_5_or_40_recipients(client, marketer, ready_delivery, django_assert_max_num_queries):
    small = ready_delivery()
    large = ready_delivery(audience=make_audience(make_profiles([f"big{i}@example.com" for i in range(40)])))
    JournalEntryFactory.create_batch(30, delivery=large)
    client.force_login(marketer)
    url = reverse("deliveries:detail", args=[small.pk])
    # the message, who left since preparation, the preview's profiles, the exclusions, the journal
    pinned(client, url, SIGNED_IN + 5, django_assert_max_num_queries)
    assert queries(client, url) == queries(client, reverse("deliveries:detail", args=[large.pk]))


def test_the_message_list_costs_the_same_for_1_or_25_messages(client, marketer, make_delivery, add_logs, django_assert_max_num_queries):
    client.force_login(marketer)
    make_delivery("First")
    one = queries(client, reverse("deliveries:list"))
    for i in range(24):
        add_logs(make_delivery(f"Message {i}", sent=2), 2)
    # the count, the status counts, the page's rows, their KPI snapshots
    pinned(client, reverse("deliveries:list"), SIGNED_IN + 4, django_assert_max_num_queries)
    assert queries(client, reverse("deliveries:list")) == one


def test_the_deployment_window_costs_the_same_for_3_or_60_sending_logs(client, marketer, make_delivery, add_logs, django_assert_max_num_queries):
    client.force_login(marketer)
    small, large = make_delivery("Small", sent=3), make_delivery("Large", sent=60)
    add_logs(small, 3)
    JournalEntryFactory(delivery=small)
    for log in add_logs(large, 60):
        TrackingLogFactory(sending_log=log)
    JournalEntryFactory.create_batch(40, delivery=large)
    url = reverse("kpis:deployment", args=[large.pk])
    pinned(client, url, SIGNED_IN + 3, django_assert_max_num_queries)  # the message with its KPIs, the journal's size and page
    assert queries(client, url) == queries(client, reverse("kpis:deployment", args=[small.pk]))


def test_the_profile_history_costs_the_same_for_1_or_12_messages(client, marketer, make_delivery, add_logs, django_assert_max_num_queries):
    client.force_login(marketer)
    one, many = ProfileFactory(), ProfileFactory()
    add_logs(make_delivery("Only"), 1, profile=one)
    for i in range(12):
        (log,) = add_logs(make_delivery(f"Newsletter {i}"), 1, profile=many)
        TrackingLogFactory(sending_log=log)
    url = reverse("tracking:profile-history", args=[many.pk])
    html = pinned(client, url, SIGNED_IN + 2, django_assert_max_num_queries)  # the profile, its sending logs with their messages
    assert html.count("Newsletter") >= 12 and SendingLog.objects.filter(profile=many).count() == 12
    assert queries(client, url) == queries(client, reverse("tracking:profile-history", args=[one.pk]))
