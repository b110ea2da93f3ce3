from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _

from .roles import ROLES


class User(AbstractUser):
    """Dispatch user. Roles come only from groups (DOMAIN.md §3)."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        permissions = [(r.codename, r.name) for r in ROLES.values()]

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username

    @classmethod
    def from_db(cls, db, field_names, values):
        user = super().from_db(db, field_names, values)
        user._loaded_superuser = user.__dict__.get("is_superuser")
        return user

    def refresh_from_db(self, *args, **kwargs):
        super().refresh_from_db(*args, **kwargs)
        self._loaded_superuser = self.is_superuser

    def save(self, *args, **kwargs):
        password_changed = self._password is not None  # set_password() was called since the last save
        before = getattr(self, "_loaded_superuser", None if self._state.adding else self.is_superuser)
        super().save(*args, **kwargs)
        if bool(before) != bool(self.is_superuser):
            # Superuser status bypasses every role: each grant and removal is in the role audit,
            # whoever made it (the admin site says who; a command or the shell is "system").
            RoleAuditLog.objects.create(
                actor=getattr(self, "_audit_actor", None),
                user=self,
                action=RoleAuditLog.Action.SUPERUSER_GRANTED if self.is_superuser else RoleAuditLog.Action.SUPERUSER_REVOKED,
                before=["superuser"] if before else [],
                after=["superuser"] if self.is_superuser else [],
                source=getattr(self, "_audit_source", "system"),
            )
        self._loaded_superuser = self.is_superuser
        if password_changed:
            # A new password ends the API token (whoever knew the old password may hold it): the next
            # POST /api/auth/token/ makes a new one.
            from rest_framework.authtoken.models import Token

            Token.objects.filter(user_id=self.pk).delete()


class RoleAuditLog(models.Model):
    """The audit trail: who changed whose groups or account, who deleted or archived a message;
    when, and what. Kept when what it names is gone (`target` says what it was)."""

    class Action(models.TextChoices):
        USER_CREATED = "user_created", _("User created")
        GROUPS_CHANGED = "groups_changed", _("Groups changed")
        MESSAGE_DELETED = "message_deleted", _("Message deleted")
        MESSAGE_ARCHIVED = "message_archived", _("Message archived")
        SUPERUSER_GRANTED = "superuser_granted", _("Superuser status granted")
        SUPERUSER_REVOKED = "superuser_revoked", _("Superuser status removed")

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="role_changes_made"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="role_changes"
    )
    action = models.CharField(max_length=32, choices=Action.choices)
    before = models.JSONField(default=list)
    after = models.JSONField(default=list)
    source = models.CharField(max_length=16, default="page")  # page, api, admin
    target = models.CharField(max_length=300, blank=True, default="")  # what a message action was about: "Spring sale (DM12)"

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.get_action_display()} {self.user}"

    @property
    def added(self) -> list[str]:
        return sorted(set(self.after) - set(self.before))

    @property
    def removed(self) -> list[str]:
        return sorted(set(self.before) - set(self.after))

    @property
    def summary(self) -> str:
        """One sentence: "Groups changed: added Approvers; removed Preparers." """
        if self.target:
            return f"{self.get_action_display()}: {self.target}."
        if self.action == self.Action.USER_CREATED:
            if self.after:
                return _("User created in %(groups)s.") % {"groups": ", ".join(self.after)}
            return _("User created without a group.")
        parts = []
        if self.added:
            parts.append(_("added %(groups)s") % {"groups": ", ".join(self.added)})
        if self.removed:
            parts.append(_("removed %(groups)s") % {"groups": ", ".join(self.removed)})
        if not parts:
            return f"{self.get_action_display()}."
        return f"{self.get_action_display()}: {'; '.join(str(p) for p in parts)}."
