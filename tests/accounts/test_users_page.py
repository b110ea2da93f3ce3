import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts import roles
from accounts.models import RoleAuditLog
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def group_ids(*names):
    return [Group.objects.get(name=n).pk for n in names]


def test_wrong_password_shows_the_forms_error(client, marketer):
    response = client.post(reverse("login"), {"username": "marketer", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_signed_in_layout_shows_who_and_their_roles(client, marketer):
    client.force_login(marketer)
    html = client.get(reverse("home")).content.decode()
    assert "Mia Marketer" in html and "(marketer)" in html
    for name in ("Prepare deliveries", "Start deliveries", "Generic import"):
        assert name in html
    assert "Users &amp; roles" not in html  # the page is for Administration only


def test_users_page_is_refused_to_others_with_the_role_it_needs(client, marketer):
    client.force_login(marketer)
    response = client.get(reverse("users"))
    assert response.status_code == 403
    assert "This page needs the “Administration” role" in response.content.decode()


def test_admin_changes_groups_and_the_change_is_audited(client, admin, preparer):
    client.force_login(admin)
    response = client.post(
        reverse("user-groups", args=[preparer.pk]), {"groups": group_ids(roles.STANDARD_USERS)}, follow=True
    )
    assert response.status_code == 200
    assert list(preparer.groups.values_list("name", flat=True)) == ["Standard users"]
    entry = RoleAuditLog.objects.get(user=preparer)
    assert (entry.actor, entry.before, entry.after) == (admin, ["Preparers"], ["Standard users"])
    html = response.content.decode()
    assert "Groups of preparer saved." in html
    assert "added Standard users; removed Preparers" in html


def test_non_admin_cannot_change_groups_and_nothing_changes(client, marketer, preparer):
    client.force_login(marketer)
    response = client.post(reverse("user-groups", args=[preparer.pk]), {"groups": group_ids(roles.ADMINISTRATORS)})
    assert response.status_code == 403
    assert list(preparer.groups.values_list("name", flat=True)) == ["Preparers"]
    assert not RoleAuditLog.objects.exists()


def test_the_last_administrator_cannot_be_removed(client, admin):
    client.force_login(admin)
    response = client.post(reverse("user-groups", args=[admin.pk]), {"groups": group_ids(roles.STANDARD_USERS)}, follow=True)
    assert "admin is the last administrator" in response.content.decode()
    assert list(admin.groups.values_list("name", flat=True)) == ["Administrators"]
    assert not RoleAuditLog.objects.exists()


def test_an_administrator_can_be_removed_when_another_remains(client, admin, make_user):
    other = make_user("admin2", roles.ADMINISTRATORS)
    client.force_login(admin)
    client.post(reverse("user-groups", args=[other.pk]), {"groups": []})
    assert other.groups.count() == 0
    assert RoleAuditLog.objects.get(user=other).removed == ["Administrators"]


def test_admin_creates_a_user_in_groups_and_it_is_audited(client, admin):
    client.force_login(admin)
    response = client.post(
        reverse("user-create"),
        {"username": "newbie", "password": PASSWORD, "first_name": "New", "groups": group_ids(roles.APPROVERS)},
    )
    assert response.status_code == 302
    entry = RoleAuditLog.objects.get(user__username="newbie")
    assert entry.action == RoleAuditLog.Action.USER_CREATED and entry.after == ["Approvers"]
    assert client.login(username="newbie", password=PASSWORD)


def test_creating_a_user_with_a_taken_login_or_weak_password_says_why(client, admin):
    client.force_login(admin)
    response = client.post(reverse("user-create"), {"username": "admin", "password": "123"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "A user with this login already exists" in html
    assert "This password is too short" in html


def test_django_admin_group_change_is_audited_and_guards_the_last_admin(client, make_user, preparer):
    superadmin = make_user("root", roles.ADMINISTRATORS, is_staff=True, is_superuser=True)
    client.force_login(superadmin)
    url = reverse("admin:accounts_user_change", args=[preparer.pk])
    form = {
        "username": "preparer",
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "groups": group_ids(roles.APPROVERS),
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(preparer.groups.values_list("name", flat=True)) == ["Approvers"]
    assert RoleAuditLog.objects.get(user=preparer).source == "admin"

    form.update(username="root", groups=[], is_staff="on", is_superuser="on")
    response = client.post(reverse("admin:accounts_user_change", args=[superadmin.pk]), form)
    assert response.status_code == 200
    assert "root is the last administrator" in response.content.decode()
    assert superadmin.groups.filter(name="Administrators").exists()
