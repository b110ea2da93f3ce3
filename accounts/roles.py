"""The roles (permissions with the app label `accounts`) and the groups that carry them.

DOMAIN.md §3. Roles reach users only through groups. This module is plain data so that the
data migration, the services and the tests all read the same table.
"""

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class Role:
    codename: str
    name: str
    allows: str

    @property
    def perm(self) -> str:
        return f"accounts.{self.codename}"


ADMINISTRATION = "administration"
PREPARE_DELIVERY = "prepare_delivery"
START_DELIVERY = "start_delivery"
GENERIC_IMPORT = "generic_import"
APPROVE_DELIVERY = "approve_delivery"
MONITOR_DELIVERY = "monitor_delivery"

ROLES: dict[str, Role] = {
    r.codename: r
    for r in (
        Role(ADMINISTRATION, "Administration", "Everything: users and roles, quarantine, settings, all messages."),
        Role(PREPARE_DELIVERY, "Prepare deliveries", "Create, edit, prepare, duplicate and delete messages; create profiles and audiences."),
        Role(START_DELIVERY, "Start deliveries", "Confirm send, Pause, Resume, Stop sending, Compute stats."),
        Role(GENERIC_IMPORT, "Generic import", "Import profiles from CSV files."),
        Role(APPROVE_DELIVERY, "Approve deliveries", "Approve the content and target of other people's messages."),
        Role(MONITOR_DELIVERY, "Monitor deliveries", "Deployment dashboard, alerts, quarantine, Pause and Stop sending, Compute stats, every Deployment window."),
    )
}

ADMINISTRATORS = "Administrators"
STANDARD_USERS = "Standard users"
PREPARERS = "Preparers"
APPROVERS = "Approvers"
DELIVERY_SUPERVISORS = "Delivery supervisors"

GROUPS: dict[str, tuple[str, ...]] = {
    ADMINISTRATORS: tuple(ROLES),
    STANDARD_USERS: (PREPARE_DELIVERY, START_DELIVERY, GENERIC_IMPORT),
    PREPARERS: (PREPARE_DELIVERY, GENERIC_IMPORT),
    APPROVERS: (APPROVE_DELIVERY,),
    DELIVERY_SUPERVISORS: (MONITOR_DELIVERY,),
}

# --- who may do what: the one table pages, the API and the permission test read -----------------
# DOMAIN.md §3. Each page and API operation names one of these actions (`accounts.decorators.allowed`,
# `api.permissions.TableAccess`); services check the same roles again. "signed_in" needs no role.
EVERY_ROLE = tuple(ROLES)
SIGNED_IN = "signed_in"
ACCESS: dict[str, tuple[str, ...]] = {
    # read messages, their dashboards and Deployment windows, profiles, audiences and imports
    "read": EVERY_ROLE,
    # create, edit, prepare, duplicate, delete messages; create and edit profiles and audiences
    "prepare": (PREPARE_DELIVERY,),
    # Confirm send, Resume, Resend unknown
    "start": (START_DELIVERY,),
    # Pause and Stop sending (supervisors too)
    "pause_stop": (START_DELIVERY, MONITOR_DELIVERY),
    # archive a message whose send ended: both roles (a tuple inside the tuple means all of them)
    "archive": ((PREPARE_DELIVERY, START_DELIVERY),),
    # import profiles from CSV files
    "import": (GENERIC_IMPORT,),
    # approve the content and target of others' messages
    "approve": (APPROVE_DELIVERY,),
    # deployment dashboard, alerts, quarantine
    "monitor": (MONITOR_DELIVERY, ADMINISTRATION),
    # Compute stats
    "compute_stats": (START_DELIVERY, MONITOR_DELIVERY, ADMINISTRATION),
    # users and roles, settings (alert thresholds, categories and approval), re-subscribing an opted-out person
    "administer": (ADMINISTRATION,),
    # one's own account (home page, what waits for me, one's API token)
    SIGNED_IN: (),
}


def access_roles(action: str) -> tuple:
    """Who may do `action`: any one of these entries, each a role or a tuple of roles held together
    (KeyError for an action the table does not name)."""
    return ACCESS[action]


def access_denied_message(action: str) -> str:
    """The refusal of `action`, naming the roles it needs."""
    entries = ACCESS[action]
    if all(isinstance(e, str) for e in entries):
        return role_required_message(*entries)
    names = " or ".join(
        " and ".join(f"“{ROLES[c].name}”" for c in e) if isinstance(e, tuple) else f"“{ROLES[e].name}”" for e in entries
    )
    return str(_("This page needs the %(roles)s roles. Ask an administrator to add you to a group that has them.")) % {
        "roles": names
    }


# The content type the role permissions hang on (created by the data migration).
ROLE_CONTENT_TYPE = ("accounts", "user")


def role_by_name(value: str) -> Role:
    """Accept 'start_delivery', 'accounts.start_delivery' or 'Start deliveries'."""
    key = value.removeprefix("accounts.")
    if key in ROLES:
        return ROLES[key]
    for role in ROLES.values():
        if role.name.lower() == value.lower():
            return role
    raise KeyError(value)


def role_required_message(*codenames: str) -> str:
    names = " or ".join(f"“{ROLES[c].name}”" for c in codenames)
    return str(_("This page needs the %(roles)s role. Ask an administrator to add you to a group that has it.")) % {
        "roles": names
    }
