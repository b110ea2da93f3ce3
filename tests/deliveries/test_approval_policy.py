"""Issue 15, item 3: approval cannot be bypassed.

Before: the author switched `requires_approval` off after a refusal, prepared again and confirmed
(journal silent); someone who rewrote another user's content approved it. Now Administration
decides per category (or for every message), whoever edited since the last approval cannot
approve, and every change is journaled.
"""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import roles
from accounts.errors import DispatchError
from deliveries.models import ApprovalPolicyChange, MessageCategory, State
from deliveries.services import (
    approval_policy_set,
    category_create,
    category_update,
    delivery_approve,
    delivery_confirm,
    delivery_prepare,
    delivery_update,
)

from .conftest import approval_category

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_author_cannot_switch_approval_off(ready_delivery, marketer, django_capture_on_commit_callbacks):
    d = ready_delivery(category=approval_category())
    response = api(marketer).patch(f"/api/deliveries/{d.pk}/", {"requires_approval": False}, format="json")
    assert response.status_code == 200 and response.json()["requires_approval"] is True
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    with pytest.raises(DispatchError, match="needs its content and target approved"):
        delivery_confirm(delivery=d, user=marketer)


def test_moving_to_a_category_without_approval_is_journaled(ready_delivery, marketer):
    d = ready_delivery(category=approval_category())
    general = MessageCategory.objects.get(name="General")
    d = delivery_update(delivery=d, user=marketer, data={"category": general})
    assert d.state == State.EDITING  # prepared again before it can be sent
    assert d.journal.filter(
        text="Category changed from “Needs approval” to “General” by Mia Marketer (marketer): approval is not required."
    ).exists()


def test_whoever_edited_since_the_last_approval_cannot_approve(ready_delivery, marketer, make_user, django_capture_on_commit_callbacks):
    editor = make_user("editor", roles.PREPARERS, roles.APPROVERS)
    other = make_user("other-approver", roles.APPROVERS)
    d = ready_delivery(category=approval_category())
    d = delivery_update(delivery=d, user=editor, data={"html": d.html + "<p>Rewritten by the editor</p>"})
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    with pytest.raises(DispatchError, match="You edited this message since its last approval") as refused:
        delivery_approve(delivery=d, user=editor, part="content")
    assert refused.value.code == "edited_by_you"
    d = delivery_approve(delivery=d, user=other, part="content")
    d = delivery_approve(delivery=d, user=editor, part="target")  # the editor's change was approved by someone else
    assert d.content_approved_by == other and d.target_approved_by == editor


def test_the_page_offers_no_approval_to_an_editor(ready_delivery, marketer, make_user, client, django_capture_on_commit_callbacks):
    editor = make_user("editor", roles.PREPARERS, roles.APPROVERS)
    d = ready_delivery(category=approval_category())
    delivery_update(delivery=d, user=editor, data={"subject": "Rewritten"})
    with django_capture_on_commit_callbacks(execute=True):
        delivery_prepare(delivery=d, user=marketer)
    client.force_login(editor)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "Approve content" not in html and "approval required" in html


def test_administration_decides_per_category_and_globally_and_it_is_journaled(admin, marketer, ready_delivery):
    newsletters = category_create(user=admin, name="Newsletters")
    d = ready_delivery(category=newsletters)
    assert not d.requires_approval
    category_update(user=admin, category=newsletters, requires_approval=True)
    d.refresh_from_db()
    assert d.requires_approval
    with pytest.raises(DispatchError, match="needs its content and target approved"):
        delivery_confirm(delivery=d, user=marketer)
    category_update(user=admin, category=newsletters, requires_approval=False)
    approval_policy_set(user=admin, require_for_all=True)
    d.refresh_from_db()
    assert d.requires_approval
    with pytest.raises(Exception, match="Administration"):
        category_update(user=marketer, category=newsletters, requires_approval=False)
    with pytest.raises(Exception, match="Administration"):
        approval_policy_set(user=marketer, require_for_all=False)
    assert list(ApprovalPolicyChange.objects.order_by("id").values_list("text", flat=True)) == [
        "Category “Newsletters” created by Ada Admin (admin); approval not required.",
        "Ada Admin (admin) made approval required for the messages of “Newsletters”.",
        "Ada Admin (admin) made approval optional for the messages of “Newsletters”.",
        "Ada Admin (admin) made approval required for every message.",
    ]


def test_categories_through_the_api_and_the_page(admin, marketer, client):
    response = api(admin).post("/api/categories/", {"name": "Transactional", "requires_approval": True}, format="json")
    assert response.status_code == 201
    pk = response.json()["id"]
    assert api(marketer).patch(f"/api/categories/{pk}/", {"requires_approval": False}, format="json").status_code == 403
    assert api(marketer).get("/api/categories/").status_code == 200
    assert api(marketer).put("/api/approval-policy/", {"require_for_all": False}, format="json").status_code == 403
    assert api(admin).put("/api/approval-policy/", {"require_for_all": True}, format="json").json() == {"require_for_all": True}
    client.force_login(admin)
    page = client.get(reverse("deliveries:categories")).content.decode()
    assert "Transactional" in page and "made approval required for every message" in page
    client.force_login(marketer)
    assert client.get(reverse("deliveries:categories")).status_code == 403
