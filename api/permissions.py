from rest_framework.permissions import BasePermission

from accounts.roles import role_required_message
from accounts.selectors import user_has_any_role


def HasRole(*roles: str):
    """DRF permission: signed in and holding one of `roles` (the services check again)."""

    class _HasRole(BasePermission):
        message = role_required_message(*roles)

        def has_permission(self, request, view):
            return bool(request.user and request.user.is_authenticated and user_has_any_role(user=request.user, roles=roles))

    _HasRole.__name__ = "HasRole_" + "_".join(roles)
    return _HasRole
