"""The send lifecycle in one place (deliveries/lifecycle.py): the buttons the page shows, the
`actions` the API lists and what the services accept are the same, in every state and for every role."""

import re

import pytest
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.errors import DispatchError
from deliveries import lifecycle, selectors, services
from deliveries.models import Delivery, SendingLog, SendingStatus, State

pytestmark = pytest.mark.django_db

CALLS = {
    "edit": lambda d, u: services.delivery_update(delivery=d, user=u, data={"subject": "Changed {{ first_name }}"}),
    "prepare": lambda d, u: services.delivery_prepare(delivery=d, user=u),
    "stop-preparation": lambda d, u: services.delivery_stop_preparation(delivery=d, user=u),
    "approve": lambda d, u: services.delivery_approve(delivery=d, user=u, part="content"),
    "confirm": lambda d, u: services.delivery_confirm(delivery=d, user=u),
    "pause": lambda d, u: services.delivery_pause(delivery=d, user=u),
    "resume": lambda d, u: services.delivery_resume(delivery=d, user=u),
    "stop": lambda d, u: services.delivery_stop(delivery=d, user=u),
    "resend-unknown": lambda d, u: services.delivery_resend_unknown(delivery=d, user=u),
    "duplicate": lambda d, u: services.delivery_duplicate(delivery=d, user=u),
    "delete": lambda d, u: services.delivery_delete(delivery=d, user=u),
    "archive": lambda d, u: services.delivery_archive(delivery=d, user=u),
}


class _Undo(Exception):
    pass


def accepted(action, d, user) -> bool:
    """Whether the service accepts `action` now (whatever it changed is rolled back)."""
    try:
        with transaction.atomic():
            CALLS[action](d, user)
            raise _Undo
    except _Undo:
        return True
    except DispatchError:
        return False


@pytest.fixture
def prepared(ready_delivery):
    """A prepared message (its revision prepared, approval not required) with one message in an unknown state."""
    d = ready_delivery()
    SendingLog.objects.filter(pk=SendingLog.objects.filter(delivery=d).values("pk")[:1]).update(status=SendingStatus.UNKNOWN)
    Delivery.objects.filter(pk=d.pk).update(processed_count=1)  # the unknown one was processed
    return d


def test_every_user_action_has_a_service_and_a_role_of_the_access_table():
    from accounts.roles import ACCESS

    assert set(lifecycle.USER_ACTIONS) == {*CALLS, "send-now"}
    for name in lifecycle.USER_ACTIONS:
        assert lifecycle.ACTIONS[name].access in ACCESS, name
    for a in lifecycle.ACTIONS.values():
        assert set(a.sources) <= set(State), a.name
        assert a.target is None or a.target in State, a.name


@pytest.mark.parametrize("state", list(State))
def test_in_every_state_the_actions_offered_are_exactly_those_the_services_accept(state, prepared, admin):
    Delivery.objects.filter(pk=prepared.pk).update(state=state)
    d = selectors.delivery_get(pk=prepared.pk, user=admin)
    offered = selectors.delivery_actions(delivery=d, user=admin)
    for action in CALLS:
        assert (action in offered) == accepted(action, Delivery.objects.get(pk=d.pk), admin), (state, action, offered)
    assert Delivery.objects.get(pk=d.pk).state == state  # everything rolled back


@pytest.mark.parametrize("state", [State.EDITING, State.READY, State.IN_PROGRESS, State.PAUSED, State.FINISHED])
def test_the_action_bar_shows_a_button_for_each_action_offered_and_no_other(state, prepared, marketer, ops, client):
    Delivery.objects.filter(pk=prepared.pk).update(state=state)
    d = selectors.delivery_get(pk=prepared.pk, user=marketer)
    for user in (marketer, ops):
        client.force_login(user)
        html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
        posted = set(re.findall(rf'action="/deliveries/{d.pk}/([a-z-]+)/"', html))
        offered = selectors.delivery_actions(delivery=d, user=user)
        assert posted == offered - {"edit", "send-now"}, (state, user.username)
        assert (reverse("deliveries:edit", args=[d.pk]) in html) == ("edit" in offered)


def test_the_api_lists_the_actions_of_the_person_asking(prepared, marketer, ops, preparer):
    Delivery.objects.filter(pk=prepared.pk).update(state=State.IN_PROGRESS)
    api = APIClient()
    expected = {
        marketer: ["pause", "stop", "resend-unknown", "duplicate"],
        ops: ["pause", "stop"],
        preparer: ["duplicate"],
    }
    for user, actions in expected.items():
        api.force_authenticate(user)
        assert api.get(f"/api/deliveries/{prepared.pk}/").json()["actions"] == actions, user.username
        listed = {row["id"]: row["actions"] for row in api.get("/api/deliveries/").json()["results"]}
        assert listed[prepared.pk] == actions, user.username


def test_a_refused_transition_names_the_state_and_writes_nothing(prepared, marketer):
    Delivery.objects.filter(pk=prepared.pk).update(state=State.FINISHED)
    before = prepared.journal.count()
    with pytest.raises(DispatchError, match="You cannot pause this message while it is “Finished”."):
        services.delivery_pause(delivery=prepared, user=marketer)
    assert prepared.journal.count() == before and Delivery.objects.get(pk=prepared.pk).state == State.FINISHED


def test_a_transition_journals_saves_and_enqueues_after_the_commit(prepared, marketer, django_capture_on_commit_callbacks):
    Delivery.objects.filter(pk=prepared.pk).update(state=State.PAUSED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        d = services.delivery_resume(delivery=prepared, user=marketer)
    assert Delivery.objects.get(pk=d.pk).state == State.IN_PROGRESS
    assert d.journal.filter(text="Delivery resumed by Mia Marketer (marketer).", user=marketer).exists()
    assert len(callbacks) == 1  # the dispatcher, once the resume is committed
