from .roles import ROLES
from .selectors import user_roles


def roles(request):
    """`my_roles` (list of Role) and `can` (codename -> bool) for templates and navigation."""
    user = getattr(request, "user", None)
    held = user_roles(user=user) if user is not None else []
    codes = {r.codename for r in held}
    return {"my_roles": held, "can": {c: c in codes for c in ROLES}}
