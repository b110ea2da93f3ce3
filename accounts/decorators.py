from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from .roles import role_required_message
from .selectors import user_has_any_role


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
