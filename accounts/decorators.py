from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from .roles import ACCESS, access_denied_message, role_required_message
from .selectors import holds_access, user_has_any_role


def role_required(*roles: str):
    """Page guard: signed in, and holding at least one of `roles`; else a 403 naming them.

    Services check again: this only decides what a page shows.
    """

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not user_has_any_role(user=request.user, roles=roles):
                raise PermissionDenied(role_required_message(*roles))
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def allowed(action: str):
    """Page guard from the access table (accounts.roles.ACCESS): signed in, and allowed `action`
    (any signed-in user for "signed_in"); else a 403 naming the roles it needs. The view remembers
    its action (`view.access`) so the permission test can check every page."""
    ACCESS[action]  # an unknown action fails at import

    def decorator(view):
        @login_required
        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not holds_access(user=request.user, action=action):
                raise PermissionDenied(access_denied_message(action))
            return view(request, *args, **kwargs)

        guarded.access = action
        return guarded

    return decorator
