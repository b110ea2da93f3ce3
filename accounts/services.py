from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils.translation import gettext as _

from .errors import DispatchError, InvalidInput
from .models import RoleAuditLog
from .roles import ADMINISTRATION, role_required_message
from .selectors import administrators, user_has_role

User = get_user_model()


def require_role(*, user, role: str) -> None:
    """Raise PermissionDenied (with a sentence naming the role) unless `user` holds `role`."""
    if not user_has_role(user=user, role=role):
        raise PermissionDenied(role_required_message(role))


def _resolve_groups(groups: Iterable) -> list[Group]:
    names, resolved = [], []
    for g in groups:
        if isinstance(g, Group):
            resolved.append(g)
        else:
            names.append(str(g))
    found = {g.name: g for g in Group.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        known = ", ".join(Group.objects.order_by("name").values_list("name", flat=True))
        raise InvalidInput(
            _("Unknown group: %(names)s. Choose among: %(known)s.") % {"names": ", ".join(unknown), "known": known},
            code="unknown_group",
        )
    return resolved + [found[n] for n in names]


def _carries_administration(groups: list[Group]) -> bool:
    return any(
        p.codename == ADMINISTRATION and p.content_type.app_label == "accounts"
        for g in groups
        for p in g.permissions.select_related("content_type")
    )


def check_last_administrator(*, user, groups: list[Group], lock: bool = False) -> None:
    """Refuse a change that would leave no active administrator.

    With `lock` (inside a transaction) the current administrators' rows are locked first, so two
    administrators removing each other at the same moment cannot both succeed.
    """
    if _carries_administration(groups):
        return
    if lock:
        ids = list(administrators().values_list("pk", flat=True))
        list(User.objects.select_for_update().filter(pk__in=ids).values_list("pk", flat=True))
    admins = set(administrators().values_list("pk", flat=True))
    if admins == {user.pk}:
        raise DispatchError(
            _(
                "%(user)s is the last administrator: add another user to the Administrators group "
                "before removing this one."
            )
            % {"user": user.username},
            code="last_administrator",
        )


def user_groups_set(*, actor, user, groups: Iterable, source: str = "page") -> RoleAuditLog | None:
    """Replace `user`'s groups. Needs Administration; audited; never removes the last administrator.

    Returns the audit entry, or None when nothing changed.
    """
    require_role(user=actor, role=ADMINISTRATION)
    new_groups = _resolve_groups(groups)
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        before = sorted(user.groups.values_list("name", flat=True))
        after = sorted({g.name for g in new_groups})
        if before == after:
            return None
        check_last_administrator(user=user, groups=new_groups, lock=True)
        user.groups.set(new_groups)
        return RoleAuditLog.objects.create(
            actor=actor, user=user, action=RoleAuditLog.Action.GROUPS_CHANGED, before=before, after=after, source=source
        )


def audit_record(*, actor, action: str, target: str = "", source: str = "page") -> RoleAuditLog:
    """Write one line of the audit trail (call it inside the transaction that makes the change)."""
    return RoleAuditLog.objects.create(actor=actor, action=action, target=target[:300], source=source)


def user_create(
    *,
    actor,
    username: str,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    groups: Iterable = (),
    source: str = "page",
):
    """Create a user in the given groups. Needs Administration; audited."""
    require_role(user=actor, role=ADMINISTRATION)
    new_groups = _resolve_groups(groups)
    if User.objects.filter(username__iexact=username).exists():
        raise InvalidInput(_("A user named %(name)s already exists.") % {"name": username}, code="duplicate_username")
    with transaction.atomic():
        user = User.objects.create_user(
            username=username, password=password, email=email, first_name=first_name, last_name=last_name
        )
        user.groups.set(new_groups)
        RoleAuditLog.objects.create(
            actor=actor,
            user=user,
            action=RoleAuditLog.Action.USER_CREATED,
            before=[],
            after=sorted(g.name for g in new_groups),
            source=source,
        )
    return user
