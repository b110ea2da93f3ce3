import pytest
from django.db.models import Count
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.errors import DispatchError
from audiences.models import Profile
from deliveries.models import ExclusionCause, ExclusionLog, SendingLog, State
from deliveries.services import (
    CHANGED_AFTER_PREPARATION,
    NOT_PREPARED,
    delivery_approve,
    delivery_confirm,
    delivery_update,
)

from .conftest import approval_category, make_audience, make_profiles, quarantine

pytestmark = pytest.mark.django_db


def test_each_exclusion_cause_with_its_volume(ready_delivery, settings):
    settings.EXCLUDED_DOMAINS = ["blocked.example"]
    profiles = make_profiles(
        [
            "ok1@example.com",
            "ok2@example.com",
            {"email": ""},  # address not specified
            {"email": "", "phone": "+33600000000"},  # address not specified
            "not-an-address",  # invalid syntax
            {"email": "flagged@example.com", "email_denylisted": True},  # profile denylist flag
            "denied@example.com",  # quarantine On denylist
            "quarantined@example.com",  # quarantine status Quarantine
            "erroneous@example.com",  # Erroneous: still sent
            "someone@blocked.example",  # excluded domain
        ]
    )
    # duplicates compared case-insensitively: the lowest id is kept
    dup = Profile.objects.create(email="OK1@Example.com", email_key=None, first_name="Dup")
    quarantine("denied@example.com", "denylist")
    quarantine("quarantined@example.com", "quarantine")
    quarantine("erroneous@example.com", "erroneous")
    audience = make_audience([*profiles, dup], name="Mixed")
    d = ready_delivery(audience=audience)
    assert d.state == State.READY
    volumes = dict(ExclusionLog.objects.filter(delivery=d).values_list("cause").annotate(n=Count("id")))
    assert volumes == {
        ExclusionCause.NO_ADDRESS: 2,
        ExclusionCause.INVALID_SYNTAX: 1,
        ExclusionCause.DENYLIST: 2,
        ExclusionCause.QUARANTINE: 1,
        ExclusionCause.DUPLICATE: 1,
        ExclusionCause.EXCLUDED_DOMAIN: 1,
    }
    assert ExclusionLog.objects.get(delivery=d, cause=ExclusionCause.DUPLICATE).profile_id == dup.pk
    assert sorted(SendingLog.objects.filter(delivery=d).values_list("address", flat=True)) == [
        "erroneous@example.com",
        "ok1@example.com",
        "ok2@example.com",
    ]
    assert (d.targeted_count, d.to_deliver_count) == (11, 3)
    journal = list(d.journal.values_list("text", flat=True))
    assert "2 profiles excluded: Address not specified." in journal
    assert "1 profile excluded: Duplicate." in journal


def test_personalization_syntax_error_is_critical_and_names_the_line(ready_delivery):
    d = ready_delivery(html="<p>Hello</p>\n<p>{{ first_name </p>\n{{ unsubscribe_url }}")
    assert d.state == State.PREPARATION_FAILED
    critical = list(d.journal.filter(level="critical").values_list("text", flat=True))
    assert any("Personalization error in the HTML content, line 2" in t for t in critical)
    assert d.prepared_revision is None


def test_missing_variable_is_a_warning_with_the_count_of_profiles(ready_delivery):
    profiles = make_profiles([{"email": "a@example.com", "first_name": "Ann"}, {"email": "b@example.com", "first_name": ""}, {"email": "c@example.com", "first_name": ""}])
    d = ready_delivery(audience=make_audience(profiles), subject="Hi {{ first_name }}", html="<p>Hi {{ first_name }} {{ unsubscribe_url }}</p>")
    assert d.state == State.READY and d.warnings_count == 1
    assert d.journal.filter(level="warning", text__startswith="The variable “first_name” is missing for 2 profiles").exists()
    assert d.journal.filter(text__regex=r"Analysis completed in .* \(1 warning\)").exists()


def test_missing_unsubscribe_link_is_a_warning(ready_delivery):
    d = ready_delivery(html="<p>No way out</p>")
    assert d.state == State.READY
    assert d.journal.filter(level="warning", text__contains="no unsubscribe link").exists()


def test_subject_and_sender_are_checked(ready_delivery):
    d = ready_delivery(subject="   ")
    assert d.state == State.PREPARATION_FAILED
    assert d.journal.filter(level="critical", text__startswith="The subject is empty").exists()


def test_a_stale_confirmation_after_an_edit_is_refused_with_the_sentence(ready_delivery, marketer, client):
    d = ready_delivery()
    stale_revision = d.revision
    delivery_update(delivery=d, user=marketer, data={"subject": "Changed"})
    client.force_login(marketer)
    response = client.post(reverse("deliveries:action", args=[d.pk, "confirm"]), {"revision": stale_revision}, follow=True)
    assert CHANGED_AFTER_PREPARATION in response.content.decode()
    d.refresh_from_db()
    assert d.state == State.EDITING and d.confirmed_at is None


def test_a_stale_tab_after_re_preparation_is_refused_too(ready_delivery, marketer, django_capture_on_commit_callbacks):
    from deliveries.services import delivery_prepare

    d = ready_delivery()
    stale = d.revision
    delivery_update(delivery=d, user=marketer, data={"subject": "Changed"})
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.READY
    with pytest.raises(DispatchError) as refused:
        delivery_confirm(delivery=d, user=marketer, revision=stale)
    assert refused.value.message == CHANGED_AFTER_PREPARATION


def test_confirming_a_message_never_prepared_says_so(new_delivery, marketer):
    with pytest.raises(DispatchError) as refused:
        delivery_confirm(delivery=new_delivery(), user=marketer)
    assert refused.value.message == NOT_PREPARED


def test_approval_rules(ready_delivery, marketer, approver, make_user, django_capture_on_commit_callbacks):
    from accounts import roles

    d = ready_delivery(category=approval_category())
    with pytest.raises(DispatchError, match="needs its content and target approved"):
        delivery_confirm(delivery=d, user=marketer)
    author_approver = make_user("both", roles.STANDARD_USERS, roles.APPROVERS)
    d.created_by = author_approver
    d.save()
    with pytest.raises(DispatchError, match="You wrote this message: someone else must approve it."):
        delivery_approve(delivery=d, user=author_approver, part="content")
    with pytest.raises(Exception, match="Approve deliveries"):
        delivery_approve(delivery=d, user=marketer, part="content")
    delivery_approve(delivery=d, user=approver, part="content")
    with pytest.raises(DispatchError, match="needs its target approved by an approver"):
        delivery_confirm(delivery=d, user=marketer)
    d = delivery_approve(delivery=d, user=approver, part="target")
    assert d.content_approved_by == approver and d.target_approved_by == approver
    # any edit clears approvals
    d = delivery_update(delivery=d, user=marketer, data={"subject": "Edited"})
    assert d.content_approved_at is None and d.target_approved_at is None


def test_dashboard_lists_who_approved(ready_delivery, approver, client):
    d = ready_delivery(category=approval_category())
    delivery_approve(delivery=d, user=approver, part="content")
    client.force_login(approver)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "approver," in html  # content approval: who and when
    assert "Approve target" in html and "Approve content" not in html


@pytest.mark.parametrize("via", ["page", "api"])
def test_preparer_cannot_confirm_and_nothing_changes(via, ready_delivery, preparer):
    d = ready_delivery()
    journal = d.journal.count()
    if via == "page":
        from django.test import Client

        c = Client()
        c.force_login(preparer)
        response = c.post(reverse("deliveries:action", args=[d.pk, "confirm"]))
        assert response.status_code == 403
        assert "Confirming a send needs the “Start deliveries” role. Ask an administrator." in response.content.decode()
    else:
        api = APIClient()
        api.force_authenticate(preparer)
        response = api.post(f"/api/deliveries/{d.pk}/confirm/", {}, format="json")
        assert response.status_code == 403
        assert response.json() == {"detail": "Confirming a send needs the “Start deliveries” role. Ask an administrator.", "code": "permission_denied"}
    d.refresh_from_db()
    assert d.state == State.READY and d.confirmed_at is None and d.journal.count() == journal


def test_preparer_sees_the_banner_and_no_confirm_button(ready_delivery, preparer, marketer, client):
    d = ready_delivery()
    client.force_login(preparer)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "Confirming a send needs the “Start deliveries” role. Ask an administrator." in html
    assert "Confirm send" not in html
    client.force_login(marketer)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "Confirming a send needs the “Start deliveries” role. Ask an administrator." not in html
    assert 'data-open-dialog="confirm-dialog"' in html and "Messages are ready to be sent immediately." in html


def test_a_template_that_fails_for_some_profiles_data_is_critical_with_their_count(ready_delivery):
    profiles = make_profiles([{"email": f"n{i}@example.com", "attributes": {"n": i}} for i in range(3)])
    html = "<p>Share: {{ 100 // attributes.n }}</p>" * 3 + "{{ unsubscribe_url }}"
    d = ready_delivery(audience=make_audience(profiles), html=html)
    assert d.state == State.PREPARATION_FAILED
    assert d.journal.filter(level="critical", text__startswith="Personalization failed for 1 profile: ZeroDivisionError").exists()
