import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from accounts import roles
from accounts.selectors import user_has_role, user_roles

pytestmark = pytest.mark.django_db


def test_every_role_is_an_accounts_permission_after_migrate():
    codenames = set(
        Permission.objects.filter(content_type__app_label="accounts", codename__in=list(roles.ROLES)).values_list(
            "codename", flat=True
        )
    )
    assert codenames == {
        "administration",
        "prepare_delivery",
        "start_delivery",
        "generic_import",
        "approve_delivery",
        "monitor_delivery",
    }


@pytest.mark.parametrize(
    "group, expected",
    [
        ("Administrators", set(roles.ROLES)),
        ("Standard users", {"prepare_delivery", "start_delivery", "generic_import"}),
        ("Preparers", {"prepare_delivery", "generic_import"}),
        ("Approvers", {"approve_delivery"}),
        ("Delivery supervisors", {"monitor_delivery"}),
    ],
)
def test_groups_carry_their_roles(group, expected):
    perms = set(Group.objects.get(name=group).permissions.values_list("codename", flat=True))
    assert perms == expected


def test_preparer_cannot_start_deliveries_but_marketer_can(preparer, marketer):
    assert not preparer.has_perm("accounts.start_delivery")
    assert not user_has_role(user=preparer, role="start_delivery")
    assert marketer.has_perm("accounts.start_delivery")
    assert user_has_role(user=marketer, role="accounts.start_delivery")
    assert user_has_role(user=marketer, role="Start deliveries")


def test_user_roles_lists_roles_from_groups_only(make_user):
    user = make_user("both", roles.APPROVERS, roles.DELIVERY_SUPERVISORS)
    assert [r.codename for r in user_roles(user=user)] == ["approve_delivery", "monitor_delivery"]
    user.is_active = False
    assert user_roles(user=user) == []


def test_seed_demo_creates_the_demo_logins_and_is_idempotent(settings):
    from django.contrib.auth import get_user_model

    settings.DEMO_PASSWORD = "demo-pass-123"
    call_command("seed_demo", quiet=True)
    call_command("seed_demo", quiet=True)
    User = get_user_model()
    expected = {
        "admin": "Administrators",
        "marketer": "Standard users",
        "preparer": "Preparers",
        "approver": "Approvers",
        "ops": "Delivery supervisors",
    }
    for login, group in expected.items():
        user = User.objects.get(username=login)
        assert list(user.groups.values_list("name", flat=True)) == [group]
        assert user.check_password("demo-pass-123")
    assert User.objects.filter(username__in=list(expected)).count() == 5
