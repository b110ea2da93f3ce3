from datetime import timedelta
from zoneinfo import available_timezones

from django import forms
from django.utils.translation import gettext_lazy as _

from audiences.models import Audience

from .models import Delivery, MessageCategory

# The zones a person picks from: "Region/City" names, UTC first (not the aliases and internal
# entries of the tz database such as "Factory", "localtime", "Etc/GMT+5", "posixrules").
TIME_ZONES = ["UTC"] + sorted(
    z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "posix/", "right/", "SystemV/", "US/"))
)


class DeliveryForm(forms.ModelForm):
    validity_hours = forms.DecimalField(
        label=_("Validity period (hours)"), min_value=0.01, max_value=84, initial=84, decimal_places=2,
        help_text=_("Soft failures are retried for this long (at most 3.5 days = 84 hours)."),
    )  # fmt: skip
    scheduled_at = forms.DateTimeField(
        label=_("Send at"), required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("In the time zone chosen below."),
    )  # fmt: skip
    schedule_tz = forms.ChoiceField(label=_("Time zone"), choices=[(z, z) for z in TIME_ZONES], initial="UTC")

    class Meta:
        model = Delivery
        fields = [
            "label", "audience", "sender_name", "sender_address", "reply_to", "subject", "html", "text",
            "schedule", "scheduled_at", "schedule_tz", "send_time", "send_time_attribute", "send_time_offset_hours",
            "category", "rate_limit_per_hour",
        ]  # fmt: skip
        widgets = {"schedule": forms.RadioSelect, "send_time": forms.RadioSelect, "html": forms.Textarea(attrs={"rows": 14}), "text": forms.Textarea(attrs={"rows": 6})}
        labels = {"html": _("HTML content"), "text": _("Text content"), "rate_limit_per_hour": _("Rate limit (messages per hour)"),
                  "send_time": _("Optimize the sending time per recipient"),
                  "send_time_attribute": _("Profile attribute holding the send date"),
                  "send_time_offset_hours": _("Offset (hours)")}  # fmt: skip
        help_texts = {
            "category": _("Administration decides which categories need approval before sending."),
            "send_time_attribute": _("With “a date from a profile attribute”: a date (read at 00:00 in the zone above) or a date and time."),
            "send_time_offset_hours": _("Hours added to the attribute's date: 9 sends a birthday message at 9:00."),
        }

    # A service's field names where the form's differ.
    SERVICE_FIELDS = {"validity": "validity_hours"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["audience"].queryset = Audience.objects.order_by("name")
        self.fields["category"].queryset = MessageCategory.objects.order_by("name")
        self.fields["category"].empty_label = None
        self.fields["category"].required = False  # the default category when a client posts none
        self.fields["category"].label_from_instance = lambda c: f"{c.name} ({_('approval required') if c.requires_approval else _('no approval')})"
        if not (self.instance and self.instance.pk):
            self.initial.setdefault("category", MessageCategory.default_id())
        # "No optimization" unless chosen (a client that posts neither keeps today's behaviour)
        self.fields["send_time"].required = self.fields["send_time_offset_hours"].required = False
        self.fields["send_time"].choices = [c for c in self.fields["send_time"].choices if c[0]]
        current = getattr(self.instance, "schedule_tz", "") or ""
        if current and current not in TIME_ZONES:  # a zone saved before (an alias): kept selectable
            self.fields["schedule_tz"].choices = [(current, current), *self.fields["schedule_tz"].choices]
        if self.instance and self.instance.pk:
            self.initial["validity_hours"] = round(self.instance.validity.total_seconds() / 3600, 2)
            if self.instance.scheduled_at:
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(self.instance.schedule_tz or "UTC")
                self.initial["scheduled_at"] = self.instance.scheduled_at.astimezone(tz).replace(tzinfo=None)

    def clean(self):
        data = super().clean()
        data["send_time"] = data.get("send_time") or Delivery._meta.get_field("send_time").default
        if data.get("send_time_offset_hours") is None:
            data["send_time_offset_hours"] = 0
        at = data.get("scheduled_at")
        if data.get("schedule") == Delivery.Schedule.AT and at is None and "scheduled_at" not in self.errors:
            self.add_error("scheduled_at", _("Choose the date and time of the send, or choose to send once confirmed."))
        if at is not None and data.get("schedule_tz"):
            from zoneinfo import ZoneInfo

            data["scheduled_at"] = at.replace(tzinfo=ZoneInfo(data["schedule_tz"]))
        return data

    def add_service_error(self, error) -> None:
        """A service's refusal, each sentence next to its field when it names one."""
        fields = getattr(error, "fields", None) or {}
        for name, message in fields.items():
            name = self.SERVICE_FIELDS.get(name, name)
            self.add_error(name if name in self.fields else None, message)
        if not fields:
            self.add_error(None, error.message)

    def service_data(self) -> dict:
        data = {k: v for k, v in self.cleaned_data.items() if k != "validity_hours"}
        data["validity"] = timedelta(hours=float(self.cleaned_data["validity_hours"]))
        return data


class CategoryForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("New category"))
    requires_approval = forms.BooleanField(required=False, label=_("Its messages need approval"))
