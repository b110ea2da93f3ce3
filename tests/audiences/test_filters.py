"""Each filter operator and AND/OR, evaluated in SQL (on PostgreSQL in CI, on SQLite by `make test` without DATABASE_URL)."""

from datetime import datetime

import pytest
from django.utils import timezone

from accounts.errors import InvalidInput
from audiences.models import Audience, AudienceMember
from audiences.selectors import audience_count, audience_profiles, conditions_count


@pytest.fixture
def people(make_profile):
    p = {
        "ann": make_profile("Ann@Example.com", first_name="Ann", last_name="Lee", language="fr", time_zone="Europe/Paris",
                            attributes={"tier": "gold", "city": "Lyon", "birthday": "1990-05-01"}),
        "bob": make_profile("bob@example.org", first_name="Bob", last_name="Martin", language="en", time_zone="Europe/London",
                            attributes={"tier": "silver", "city": "London", "birthday": "1985-12-24"}),
        "cyd": make_profile("cyd@example.net", first_name="Cyd", last_name="Lemaire", language="fr", time_zone="America/Montreal",
                            attributes={"tier": "", "city": "Montréal"}),
        "dan": make_profile("", phone="+33612345678", first_name="Dan", language="", email_denylisted=True, attributes={}),
    }
    from audiences.models import Profile

    Profile.objects.filter(pk=p["bob"].pk).update(created_at=timezone.make_aware(datetime(2024, 1, 10, 12)))
    return p


def names(conditions):
    audience = Audience(kind=Audience.Kind.FILTER, conditions=conditions)
    return sorted(p.first_name for p in audience_profiles(audience=audience))


def cond(field, operator, value=None):
    return {"op": "and", "conditions": [{"field": field, "operator": operator, "value": value}]}


@pytest.fixture
def backend(db):
    """The configured database: PostgreSQL in CI (where `equals` on attributes uses jsonb @>),
    SQLite on a bare machine (the portable path)."""


def test_equals_on_fields_email_and_attributes(people, backend):
    assert names(cond("language", "equals", "fr")) == ["Ann", "Cyd"]
    assert names(cond("email", "equals", "ann@EXAMPLE.com")) == ["Ann"]  # case-insensitive
    assert names(cond("attributes__tier", "equals", "gold")) == ["Ann"]
    assert names(cond("attributes.city", "equals", "London")) == ["Bob"]
    assert names(cond("email_denylisted", "equals", "true")) == ["Dan"]


def test_not_equals_includes_profiles_without_the_attribute(people, backend):
    assert names(cond("language", "not_equals", "fr")) == ["Bob", "Dan"]
    assert names(cond("attributes__tier", "not_equals", "gold")) == ["Bob", "Cyd", "Dan"]


def test_contains_is_case_insensitive(people, backend):
    assert names(cond("last_name", "contains", "le")) == ["Ann", "Cyd"]
    assert names(cond("email", "contains", "EXAMPLE.org")) == ["Bob"]
    assert names(cond("attributes__city", "contains", "lon")) == ["Bob"]


def test_in_takes_a_list_or_comma_separated_text(people, backend):
    assert names(cond("time_zone", "in", ["Europe/Paris", "Europe/London"])) == ["Ann", "Bob"]
    assert names(cond("attributes__tier", "in", "gold, silver")) == ["Ann", "Bob"]


def test_is_empty_and_is_not_empty(people, backend):
    assert names(cond("language", "is_empty")) == ["Dan"]
    assert names(cond("email", "is_empty")) == ["Dan"]
    assert names(cond("attributes__tier", "is_empty")) == ["Cyd", "Dan"]  # blank or missing
    assert names(cond("attributes__tier", "is_not_empty")) == ["Ann", "Bob"]


def test_before_and_after_dates(people, backend):
    assert names(cond("created_at", "before", "2024-01-11")) == ["Bob"]
    assert names(cond("created_at", "after", "2024-01-10")) == ["Ann", "Cyd", "Dan"]
    assert names(cond("attributes__birthday", "before", "1990-01-01")) == ["Bob"]  # missing dates never match
    assert names(cond("attributes__birthday", "after", "1990-05-01")) == []
    assert names(cond("attributes__birthday", "after", "1990-04-30")) == ["Ann"]


def test_and_or_and_nested_groups(people, backend):
    fr_or_gold = {"op": "or", "conditions": [
        {"field": "language", "operator": "equals", "value": "en"},
        {"field": "attributes__tier", "operator": "equals", "value": "gold"},
    ]}
    assert names(fr_or_gold) == ["Ann", "Bob"]
    nested = {"op": "and", "conditions": [
        {"field": "email", "operator": "is_not_empty"},
        {"op": "or", "conditions": [
            {"field": "language", "operator": "equals", "value": "en"},
            {"field": "attributes__city", "operator": "contains", "value": "mont"},
        ]},
    ]}
    assert names(nested) == ["Bob", "Cyd"]


def test_an_empty_filter_matches_every_profile(people, backend):
    assert names({"op": "and", "conditions": []}) == ["Ann", "Bob", "Cyd", "Dan"]


def test_counts_are_sql_counts_for_lists_and_filters(people, django_assert_num_queries):
    audience = Audience.objects.create(name="Fr", kind=Audience.Kind.FILTER, conditions=cond("language", "equals", "fr"))
    with django_assert_num_queries(1):
        assert audience_count(audience=audience) == 2
    listed = Audience.objects.create(name="Some", kind=Audience.Kind.LIST)
    AudienceMember.objects.bulk_create([AudienceMember(audience=listed, profile=people[k]) for k in ("ann", "dan")])
    assert audience_count(audience=listed) == 2
    assert conditions_count(conditions=cond("attributes__tier", "is_empty")) == 2


@pytest.mark.parametrize(
    "conditions, message",
    [
        (cond("nickname", "equals", "x"), "is not a profile field"),
        (cond("language", "before", "2024-01-01"), "does not apply to language"),
        (cond("created_at", "after", "yesterday"), "YYYY-MM-DD"),
        (cond("attributes__tier", "in", []), "at least one value"),
        ({"op": "xor", "conditions": []}, "“and” or “or”"),
    ],
)
def test_a_wrong_condition_is_refused_with_a_sentence(db, conditions, message):
    with pytest.raises(InvalidInput, match=message):
        conditions_count(conditions=conditions)
