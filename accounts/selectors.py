from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet

from .models import RoleAuditLog
from .roles import ACCESS, ADMINISTRATION, ROLES, Role, access_denied_message, role_by_name

User = get_user_model()


def user_roles(*, user) -> list[Role]:
    """The roles a user holds, through their groups (every role for an active superuser)."""
    if not user or not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser:
        return list(ROLES.values())
    perms = user.get_group_permissions()
    return [role for role in ROLES.values() if role.perm in perms]


def user_has_role(*, user, role: str) -> bool:
    wanted = role_by_name(role)
    return any(r.codename == wanted.codename for r in user_roles(user=user))


def holds_access(*, user, action: str) -> bool:
    """Whether `user` may do `action` of the access table (accounts.roles.ACCESS)."""
    if not user or not user.is_authenticated:
        return False
    needed = ACCESS[action]
    if not needed:
        return True
    held = {r.codename for r in user_roles(user=user)}
    return any(set(entry) <= held if isinstance(entry, tuple) else entry in held for entry in needed)


def require_access(*, user, action: str) -> None:
    """Raise PermissionDenied (with the sentence naming the roles) unless `user` may do `action`
    of the access table: the check every permission-checked fetch and service makes."""
    if not holds_access(user=user, action=action):
        raise PermissionDenied(access_denied_message(action))


def user_has_any_role(*, user, roles: tuple[str, ...] | list[str]) -> bool:
    held = {r.codename for r in user_roles(user=user)}
    return any(role_by_name(r).codename in held for r in roles)


def group_list() -> QuerySet:
    return Group.objects.order_by("name").prefetch_related("permissions")


def user_list() -> QuerySet:
    return User.objects.order_by("username").prefetch_related(
        Prefetch("groups", queryset=Group.objects.order_by("name").prefetch_related("permissions"))
    )


def roles_of_groups(groups) -> list[Role]:
    """Roles carried by already-fetched groups (uses prefetched permissions: no query per group)."""
    codenames = {p.codename for g in groups for p in g.permissions.all() if p.content_type.app_label == "accounts"}
    return [r for r in ROLES.values() if r.codename in codenames]


def administrators() -> QuerySet:
    """Active users who hold Administration through a group."""
    return User.objects.filter(
        is_active=True,
        groups__permissions__codename=ADMINISTRATION,
        groups__permissions__content_type__app_label="accounts",
    ).distinct()


def audit_log_list(*, limit: int = 50) -> QuerySet:
    return RoleAuditLog.objects.select_related("actor", "user")[:limit]


def users_with_role(*, role: str) -> QuerySet:
    codename = role_by_name(role).codename
    return User.objects.filter(
        is_active=True,
        groups__permissions__codename=codename,
        groups__permissions__content_type__app_label="accounts",
    ).distinct()
