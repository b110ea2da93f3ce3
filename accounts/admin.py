from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm

from .errors import DispatchError
from .models import RoleAuditLog, User
from .services import check_last_administrator, user_groups_set


class DispatchUserChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User

    def clean(self):
        data = super().clean()
        if self.instance.pk and "groups" in data:
            try:
                check_last_administrator(user=self.instance, groups=list(data["groups"]))
            except DispatchError as e:
                raise forms.ValidationError(e.message) from e
        return data


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Same rules as the Users & roles page: group changes go through the audited service."""

    form = DispatchUserChangeForm
    list_display = ("username", "first_name", "last_name", "email", "is_active", "group_names")
    # Roles reach users only through groups: no per-user permissions here.
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Groups (roles)", {"fields": ("is_active", "groups")}),
        ("Django admin access", {"fields": ("is_staff", "is_superuser")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )

    @admin.display(description="Groups")
    def group_names(self, obj):
        return ", ".join(g.name for g in obj.groups.all())

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    def save_model(self, request, obj, form, change):
        obj._audit_actor, obj._audit_source = request.user, "admin"  # a change of superuser status names who
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        groups = form.cleaned_data.pop("groups", None)
        super().save_related(request, form, formsets, change)
        if groups is not None:
            if change:
                user_groups_set(actor=request.user, user=form.instance, groups=groups, source="admin")
            else:
                form.instance.groups.set(groups)
                RoleAuditLog.objects.create(
                    actor=request.user,
                    user=form.instance,
                    action=RoleAuditLog.Action.USER_CREATED,
                    after=sorted(g.name for g in groups),
                    source="admin",
                )


@admin.register(RoleAuditLog)
class RoleAuditLogAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "user", "action", "before", "after", "source")
    list_filter = ("action", "source")
    readonly_fields = [f.name for f in RoleAuditLog._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
