from rest_framework.permissions import BasePermission

from accounts.roles import access_denied_message
from accounts.selectors import holds_access


def read_write(write: str) -> dict[str, str]:
    """Any role reads (GET); writing needs the `write` action."""
    return {"GET": "read", "POST": write, "PUT": write, "PATCH": write, "DELETE": write}


class TableAccess(BasePermission):
    """DRF permission from the access table (accounts.roles.ACCESS): the view names its action in
    `access`, one for every method or a dict per method (HEAD and OPTIONS count as GET)."""

    def _action(self, request, view) -> str | None:
        access = getattr(view, "access", None)
        if isinstance(access, dict):
            method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
            return access.get(method)
        return access

    def has_permission(self, request, view):
        if request.method.lower() not in ("head", "options") and not hasattr(view, request.method.lower()):
            return True  # a method the view does not offer: DRF answers 405 with the Allow header
        action = self._action(request, view)
        if action is None:
            return False
        if not (request.user and request.user.is_authenticated):
            return False
        if not holds_access(user=request.user, action=action):
            self.message = getattr(view, "access_denied_message", None) or access_denied_message(action)
            return False
        return True
