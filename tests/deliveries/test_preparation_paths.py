"""Preparation judges a million profiles in SQL (PostgreSQL) and renders one profile per class of
profiles that render alike. These tests hold it to what the straightforward way gives: every
profile judged one by one in Python, every recipient rendered. Same exclusions (cause, profile),
same sending logs, same warnings and errors with the same counts, on the SQL path and on the
portable one (the one SQLite takes)."""

from collections import Counter

import pytest
from django.db.models import Count

from audiences.emails import is_valid_email
from audiences.models import Profile, Quarantine
from deliveries import preparation
from deliveries.models import Delivery, ExclusionLog, JournalEntry, SendingLog, State
from deliveries.personalization import check_template, profile_context, render_with_missing
from deliveries.preparation import CHECK_LINKS, delivery_prepare_run
from deliveries.services import delivery_stop_preparation

from .conftest import make_audience, quarantine

pytestmark = pytest.mark.django_db

ADDRESSES = [
    "plain@example.com", "UPPER.Local@example.com", "a@b.co", "a@b.c", "a..b@example.com", ".a@example.com",
    "a.@example.com", "a@-x.com", "a@x-.com", "a@x.com.", "a@xn--p1ai", "a@x.xn--p1ai", "a@x.XN--P1AI", "a@x.c0m",
    "a b@example.com", "a@x..com", "a@@x.com", "a@x_y.com", "x" * 65 + "@example.com", "x" * 64 + "@example.com",
    "a@" + "b" * 64 + ".com", "a@" + "b" * 63 + ".com", "a@" + "c" * 60 + ".example.com", "üser@example.com",
    "user@exämple.com", " padded@example.com ", "tab@example.com\t", "\x1cfs@example.com", "nbsp@example.com\u00a0",
    "a@1.2.3.4", "a@x.1com", "o'hara+tag@example.com", "a@sub.example.co.uk", "no-at-sign", "   ",
    "x@" + "d" * 245 + ".com", "{weird}|~@example.com", "a@b-c.d-e.example.com",
]  # fmt: skip


def reference_causes(profiles, *, domains=frozenset()) -> dict[int, str | None]:
    """The rules of DOMAIN.md §5 applied one profile at a time in id order (the way preparation
    worked before it was set-based)."""
    statuses = dict(Quarantine.objects.filter(channel="email").values_list("address", "status"))
    seen, causes = set(), {}
    for p in sorted(profiles, key=lambda p: p.pk):
        key = p.email_key or p.email.strip().lower()
        status = statuses.get(key)
        if not p.email:
            cause = "no_address"
        elif not is_valid_email(p.email):
            cause = "invalid_syntax"
        elif p.email_denylisted or status == "denylist":
            cause = "denylist"
        elif status == "quarantine":
            cause = "quarantine"
        elif key in seen:
            cause = "duplicate"
        elif key.rpartition("@")[2] in domains:
            cause = "excluded_domain"
        else:
            cause = None
            seen.add(key)
        causes[p.pk] = cause
    return causes


def outcome(d: Delivery) -> dict:
    """What a preparation left: its logs, its counts and its journal lines (times left out)."""
    d.refresh_from_db()
    journal = sorted(
        (level, text)
        for level, text in JournalEntry.objects.filter(delivery=d).values_list("level", "text")
        if not text.startswith(("Analysis completed in", "Analysis failed in", "Preparation started", "Message created"))
    )
    return {
        "state": d.state,
        "counts": (d.targeted_count, d.to_deliver_count, d.warnings_count),
        "sent": sorted(SendingLog.objects.filter(delivery=d).values_list("profile_id", "address")),
        "excluded": sorted(ExclusionLog.objects.filter(delivery=d).values_list("profile_id", "address", "cause")),
        "journal": journal,
    }


def prepare(d: Delivery, *, portable: bool) -> dict:
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    JournalEntry.objects.filter(delivery=d).delete()
    delivery_prepare_run(delivery_id=d.pk, portable=portable)
    return outcome(d)


@pytest.fixture
def both_paths(postgres_only, new_delivery, settings):
    """Prepare a message both ways and return both outcomes. `chunk`: profiles per statement (a
    few, to cross ranges; many, so that the classes of the personalization check hold many profiles)."""

    def run(chunk: int = 3, **delivery):
        settings.PREPARATION_CHUNK = chunk
        d = new_delivery(**delivery)
        return prepare(d, portable=False), prepare(d, portable=True), d

    return run


def test_every_exclusion_matches_the_rules_applied_one_profile_at_a_time(both_paths, settings):
    settings.EXCLUDED_DOMAINS = ["blocked.example", "exämple.com"]
    keyed, keys = [], set()
    for a in ADDRESSES:  # a key already taken is left empty (as a row written around the services has)
        key = a.strip().lower() or None
        keyed.append(Profile(email=a, email_key=None if key in keys else key, first_name="A"))
        keys.add(key)
    profiles = Profile.objects.bulk_create(keyed)
    # Rows written around the services have no email_key: only they can repeat an address.
    more = Profile.objects.bulk_create(
        [
            Profile(email="Plain@Example.com", email_key=None),  # a duplicate of an earlier profile, in another case
            Profile(email="twin@example.com", email_key=None),  # first of two keyless twins: kept
            Profile(email="TWIN@example.com", email_key=None),  # its twin: duplicate
            Profile(email="first@blocked.example", email_key=None),  # excluded domain, twice: never a duplicate
            Profile(email="First@blocked.example", email_key=None),
            Profile(email="listed@example.com", email_key=None, email_denylisted=True),  # denylisted: not kept...
            Profile(email="Listed@example.com", email_key=None),  # ...so this one is sent
            Profile(email="", email_key=None, phone="+33600000000"),
            Profile(email="q@example.com", email_key=None),  # quarantined through its address, whatever the case
            Profile(email=" Q@example.com", email_key=None),
            Profile(email="denied@example.com", email_key="denied@example.com"),
            Profile(email="Ünï@example.com", email_key=None),
            Profile(email="ünï@example.com", email_key=None),
        ]
    )
    quarantine("q@example.com", "quarantine")
    quarantine("denied@example.com", "denylist")
    quarantine("a@b.co", "erroneous")  # Erroneous: still sent
    everyone = [*profiles, *more]
    sql, portable, _d = both_paths(audience=make_audience(everyone))

    expected = reference_causes(everyone, domains={"blocked.example", "exämple.com"})
    excluded = sorted((pid, p.email, cause) for p in everyone if (cause := expected[(pid := p.pk)]))
    sent = sorted((p.pk, p.email) for p in everyone if expected[p.pk] is None)
    assert sql["excluded"] == excluded
    assert sql["sent"] == sent
    assert sql == portable
    volumes = Counter(cause for _pid, _email, cause in excluded)
    assert set(volumes) == {"no_address", "invalid_syntax", "denylist", "quarantine", "duplicate", "excluded_domain"}
    assert sql["counts"][:2] == (len(everyone), len(sent))
    for cause, n in volumes.items():
        label = dict(preparation.ExclusionCause.choices)[cause]
        assert ("info", f"{n} profile{'s' if n > 1 else ''} excluded: {label}.") in sql["journal"]


TEMPLATES = [
    "Hi {{ first_name }}",
    "{{ first_name|default('friend') }} {{ last_name|upper|trim }}",
    "{% if attributes.vip %}VIP {{ attributes.tier }}{% endif %}",
    "{{ attributes.plan or 'basic' }} {{ full_name }}",
    "{{ 100 // attributes.n }}",
    "{% for x in attributes.items_list %}{{ x.name }}{% endfor %}",
    "{{ attributes.count|length }}",
    "{{ attributes['plan'] }} {{ attributes.get('plan') }}",
    "{% set n = first_name %}{{ n }}",
    "{% for first_name in ['a'] %}{{ first_name }}{% endfor %}{{ first_name }}",
    "{{ attributes.plan.name }}",
    "{{ email|replace('@', ' at ') }} {{ language|upper }} {{ time_zone }} {{ phone }}",
    "{% if first_name|trim %}{{ last_name }}{% endif %}",
    "{{ first_name ~ ' ' ~ last_name }}",
    "{{ attributes.score > 3 }}",
    "{% if attributes %}{{ attributes }}{% endif %}",
    "{{ attributes.vip|default('no', true) }} {{ attributes.items }}",
    "{{ unknown_var }} {{ unsubscribe_url }}",
    "{{ 'x' if attributes.flag is defined else first_name }}",
    "{% if not attributes.tier %}{{ last_name|wordcount }}{% else %}{{ attributes.tier|e }}{% endif %}",
    "{{ attributes.n|int + 1 }} {{ (attributes.tier|string)[0] }}",
    "{% macro m(x) %}{{ x }}{{ first_name }}{% endmacro %}{{ m(attributes.tier) }}",
]

ATTRIBUTES = [
    {}, {"tier": 0}, {"tier": []}, {"n": 0}, {"n": 2}, {"n": "3"}, {"n": 1.0}, {"vip": False}, {"vip": 0.0}, {"vip": []}, {"vip": "yes", "tier": "gold"},
    {"vip": ""}, {"vip": None, "tier": ""}, {"items_list": [{"name": "a"}, 1]}, {"items_list": 5}, {"count": 3},
    {"count": "abc"}, {"score": 5}, {"score": "5"}, {"plan": {"name": "x"}}, {"plan": "gold"}, {"flag": 0},
    {"tier": {"x": 1}}, {"vip": {}, "n": -0.0}, {"tier": 7, "n": 5}, {"vip": "yes"}, {"vip": 1},
]  # fmt: skip
NAMES = [("Ann", "Lee"), ("", "Lee"), ("Ann", ""), ("", ""), (" ", ""), ("Zoé", "Ng Ng")]


def reference_check(template_source: str, profiles) -> tuple[Counter, Counter]:
    """Every recipient rendered, the way preparation checked before."""
    template = check_template(template_source, autoescape=False)
    missing, errors = Counter(), Counter()
    for p in profiles:
        try:
            _out, names = render_with_missing(template, profile_context(p) | CHECK_LINKS)
        except Exception as e:
            errors[f"{type(e).__name__}: {e}"] += 1
            continue
        missing.update(names)
    return missing, errors


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_personalization_check_finds_what_rendering_every_recipient_finds(template, both_paths):
    profiles = Profile.objects.bulk_create(
        [
            Profile(email=f"p{i}@example.com", email_key=f"p{i}@example.com", first_name=first, last_name=last,
                    language="fr" if i % 3 else "", phone="+33600000000" if i % 2 else "", attributes=attrs)  # fmt: skip
            for i, (attrs, (first, last)) in enumerate((a, n) for a in ATTRIBUTES for n in NAMES)
        ]
    )
    subject = "Hello"
    sql, portable, d = both_paths(chunk=100_000, audience=make_audience(profiles), subject=subject, html=template)
    missing, errors = reference_check("\n".join((subject, template)), profiles)
    checker = preparation.Checker(template=None, classes=None, missing=missing, errors=errors)
    critical, warnings = preparation.check_problems(checker)
    expected = sorted([("critical", t) for t in critical] + [("warning", t) for t in warnings])
    found = sorted(line for line in sql["journal"] if line[0] == "critical" or line[1].startswith(("The variable", "Personalization failed")))
    found = [line for line in found if "Analysis" not in line[1]]
    assert found == expected
    assert sql == portable


def test_a_template_that_prints_and_tests_renders_a_handful_of_profiles_whatever_the_audience(postgres_only, new_delivery, settings):
    settings.PREPARATION_CHUNK = 1000
    profiles = Profile.objects.bulk_create(
        [
            Profile(email=f"r{i}@example.com", email_key=f"r{i}@example.com", first_name=f"Name{i}" if i % 4 else "",
                    attributes={"city": f"City{i}"} if i % 5 else {"city": ""})  # fmt: skip
            for i in range(2000)
        ]
    )
    audience = make_audience(profiles)
    d = new_delivery(audience=audience, subject="{{ first_name }}", html="{{ attributes.city|default('your city') }} {{ first_name|upper }} {{ unsubscribe_url }}")
    renders = []
    original = preparation.Checker.add

    def counting(self, row, count):
        renders.append(count)
        return original(self, row, count)

    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    preparation.Checker.add = counting
    try:
        delivery_prepare_run(delivery_id=d.pk)
    finally:
        preparation.Checker.add = original
    d.refresh_from_db()
    assert d.to_deliver_count == 2000 and sum(renders) == 2000
    assert len(renders) <= 2 * 4  # (first name there or not) x (city there, empty or missing), per statement
    assert d.journal.filter(level="warning", text__startswith="The variable “first_name” is missing for 500 profiles").exists()


@pytest.mark.parametrize("connections", [1, 2])
@pytest.mark.django_db(transaction=True)
def test_stop_preparation_between_statements_leaves_no_log(connections, new_delivery, marketer, settings, monkeypatch):
    """Stop preparation while it runs (on one connection, or on two outside a transaction, as a
    worker does): it ends after the statements in progress, and removes what it wrote."""
    settings.PREPARATION_CHUNK, settings.PREPARATION_CONNECTIONS = 2, connections
    profiles = Profile.objects.bulk_create([Profile(email=f"s{i}@example.com", email_key=f"s{i}@example.com") for i in range(9)])
    d = new_delivery(audience=make_audience(profiles))
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    progress = []
    original = preparation._check_running

    def user_clicks_stop_after_the_first_part(delivery, **kwargs):
        original(delivery, **kwargs)
        if kwargs.get("done") is None:
            return  # between renders
        progress.append(Delivery.objects.get(pk=d.pk).progress)
        if len(progress) == 1:
            delivery_stop_preparation(delivery=d, user=marketer)

    monkeypatch.setattr(preparation, "_check_running", user_clicks_stop_after_the_first_part)
    delivery_prepare_run(delivery_id=d.pk)
    d.refresh_from_db()
    assert 0 < progress[0] < 100
    assert d.state == State.EDITING and d.to_deliver_count == 0
    assert not SendingLog.objects.filter(delivery=d).exists() and not ExclusionLog.objects.filter(delivery=d).exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_judges_ranges_on_two_connections_with_the_same_result(postgres_only, new_delivery, settings):
    settings.PREPARATION_CHUNK, settings.PREPARATION_CONNECTIONS = 4, 2
    profiles = Profile.objects.bulk_create(
        [Profile(email=f"w{i}@example.com", email_key=f"w{i}@example.com", email_denylisted=i % 7 == 0) for i in range(40)]
        + [Profile(email=f"W{i}@example.com", email_key=None) for i in range(0, 40, 5)]  # keyless repeats
        + [Profile(email="bad address", email_key=None), Profile(email="ünï@example.com", email_key="ünï@example.com")]
    )
    quarantine("w3@example.com", "quarantine")
    d = new_delivery(audience=make_audience(profiles), html="<p>{{ first_name }}</p>{{ unsubscribe_url }}")
    two = prepare(d, portable=False)
    expected = reference_causes(profiles)
    assert two["excluded"] == sorted((p.pk, p.email, c) for p in profiles if (c := expected[p.pk]))
    assert two["sent"] == sorted((p.pk, p.email) for p in profiles if expected[p.pk] is None)
    assert ("warning", f"The variable “first_name” is missing for {len(two['sent'])} profiles: they will see it empty (use |default(…)).") in two["journal"]
    assert two == prepare(d, portable=True)


def test_preparing_again_replaces_every_log(ready_delivery, django_capture_on_commit_callbacks, marketer):
    from deliveries.services import delivery_prepare

    d = ready_delivery()
    first = set(SendingLog.objects.filter(delivery=d).values_list("id", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    logs = SendingLog.objects.filter(delivery=d)
    assert d.state == State.READY and logs.count() == d.to_deliver_count == 5
    assert not first & set(logs.values_list("id", flat=True))
    assert logs.values("address").annotate(n=Count("id")).filter(n__gt=1).count() == 0
