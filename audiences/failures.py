"""The failure vocabulary (DOMAIN.md §5): the type and reason of a message that could not be
delivered, and a spam complaint. Here, at the bottom of the apps that use it: quarantine
(audiences) judges an address by them, deliveries writes them on its sending logs (and re-exports
them from deliveries.models), tracking reads them from providers' events."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class FailureType(models.TextChoices):
    SOFT = "soft", _("Soft")
    HARD = "hard", _("Hard")
    IGNORED = "ignored", _("Ignored")


class FailureReason(models.TextChoices):
    USER_UNKNOWN = "user_unknown", _("User unknown")
    INVALID_DOMAIN = "invalid_domain", _("Invalid domain")
    UNREACHABLE = "unreachable", _("Unreachable")
    MAILBOX_FULL = "mailbox_full", _("Mailbox full")
    ACCOUNT_DISABLED = "account_disabled", _("Account disabled")
    REFUSED = "refused", _("Refused")
    DENYLIST = "denylist", _("Address on denylist")
    NOT_DEFINED = "not_defined", _("Not defined")
    IGNORED = "ignored", _("Error ignored")


# What quarantine hears besides a failure of a send: the recipient reported the message as spam
# (a provider's complaint event). Never a sending log's failure type: the log stays sent; the
# address goes On denylist (DOMAIN.md §5).
COMPLAINT = "complaint"

# The failures quarantine counts (an ignored one changes nothing).
QUARANTINE_TYPES = (FailureType.HARD, FailureType.SOFT, COMPLAINT)
