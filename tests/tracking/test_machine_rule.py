"""One machine-traffic rule (tracking/machine.py), one writer per database: the pixel, the mirror
page, a link and a provider's open event judge the same hit the same way, on PostgreSQL's
statements and on the portable path, and the rule's SQL says what its Python says."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from deliveries.models import SendingStatus
from tests.conftest import require
from tracking import services
from tracking.machine import machine_reason, reason_sql, rule_params
from tracking.models import TrackingLog

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0"
SCANNER = "Barracuda Sentinel (EE)"


@pytest.fixture(params=["postgresql statement", "portable path"])
def writer(request, monkeypatch):
    """Each writer in turn: PostgreSQL's one statement (when the database is PostgreSQL) and the
    portable path (what SQLite runs; plain SQL that PostgreSQL runs too)."""
    if request.param == "portable path":
        monkeypatch.setattr(services, "_postgres", lambda: False)
    else:
        require(connection.vendor == "postgresql", "the PostgreSQL statement needs PostgreSQL: set DATABASE_URL=postgres://…")
    return request.param


def provider_open(log, *, at, user_agent=BROWSER):
    event = SimpleNamespace(
        event_type="opened", event_id=f"e-{log.pk}-{at.timestamp()}", metadata={"dispatch_log": str(log.pk)}, esp_event={},
        timestamp=at, recipient=log.address, description="", mta_response="", user_agent=user_agent,
    )  # fmt: skip
    return services.provider_event_record(esp="postmark", event=event)


def hits(log):
    return list(TrackingLog.objects.filter(sending_log=log).order_by("id").values_list("kind", "is_machine", "machine_reason"))


@pytest.mark.parametrize("how", ["pixel", "mirror page", "provider event"])
def test_a_hit_a_second_after_delivery_is_a_machine_s_by_every_writer(how, writer, make_sent):
    sent = make_sent(sent_ago=timedelta(seconds=1))
    client = Client(HTTP_USER_AGENT=BROWSER)
    if how == "pixel":
        client.get(sent.open_path())
    elif how == "mirror page":
        client.get(sent.mirror_path())
    else:
        assert provider_open(sent.log, at=timezone.now()) == "applied"
    [(kind, machine, reason)] = hits(sent.log)
    assert (machine, reason) == (True, "Within 2 s of delivery"), (how, writer)
    assert sent.refresh().log.first_open_at is None  # machines set no first time


@pytest.mark.parametrize("how", ["pixel", "mirror page", "provider event"])
def test_a_person_an_hour_later_is_counted_once_by_every_writer(how, writer, make_sent):
    sent = make_sent(sent_ago=timedelta(hours=1))
    client = Client(HTTP_USER_AGENT=BROWSER)
    for _ in range(2):
        if how == "pixel":
            client.get(sent.open_path())
        elif how == "mirror page":
            client.get(sent.mirror_path())
        else:
            provider_open(sent.log, at=timezone.now())
    assert [machine for _kind, machine, _reason in hits(sent.log)] == [False, False]
    first = sent.refresh().log.first_open_at
    assert first is not None and first == TrackingLog.objects.filter(sending_log=sent.log).order_by("at").first().at


def test_a_scanner_is_a_machine_whoever_reports_it(writer, make_sent):
    sent = make_sent()
    Client(HTTP_USER_AGENT=SCANNER).get(sent.open_path())
    provider_open(sent.log, at=timezone.now(), user_agent=SCANNER)
    assert [(m, r.startswith("Known ")) for _k, m, r in hits(sent.log)] == [(True, True), (True, True)]


def test_the_rule_s_sql_says_what_its_python_says(postgres_only):
    now = timezone.now()
    cases = []
    for agent in ("", "Known mail scanner: Example"):
        for event_at, status in ((None, SendingStatus.SENDING), (None, SendingStatus.SENT), (now - timedelta(seconds=1), SendingStatus.SENT),
                                 (now - timedelta(seconds=5), SendingStatus.SENT)):  # fmt: skip
            for burst in (False, True):
                cases.append((agent, event_at, status, burst))
    sql = "SELECT " + reason_sql(agent="%(agent)s", event_at="%(event_at)s::timestamptz", status="%(status)s", at="%(at)s", burst="%(burst)s")
    with connection.cursor() as cursor:
        for agent, event_at, status, burst in cases:
            cursor.execute(sql, {**rule_params(), "agent": agent, "event_at": event_at, "status": status, "at": now, "burst": burst})
            in_sql = cursor.fetchone()[0]
            ua = SCANNER if agent else BROWSER
            in_python = machine_reason(user_agent=ua, at=now, delivered_at=event_at, status=status, burst=burst)
            assert bool(in_sql) == bool(in_python), (agent, event_at, status, burst)
            if not agent:
                assert in_sql == in_python, (event_at, status, burst)

