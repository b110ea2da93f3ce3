from decimal import Decimal

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _


def _percent(rate: float) -> Decimal:
    """0.2 -> Decimal('20'), 0.035 -> Decimal('3.5') (never '2E+1')."""
    return Decimal(format((Decimal(str(rate)) * 100).normalize(), "f"))


class ThresholdsForm(forms.Form):
    """Rates are typed as percentages (5 for 5%); the services store shares (0.05)."""

    bounce_rate_percent = forms.DecimalField(
        label=_("Bounces + errors alert (%)"), min_value=Decimal("0.01"), max_value=100, decimal_places=2,
        help_text=_("An alert goes out when bounces + errors reach this share of the processed messages."),
    )  # fmt: skip
    bounce_min_processed = forms.IntegerField(
        label=_("…once at least this many messages were processed"), min_value=0,
    )  # fmt: skip
    start_pending_minutes = forms.IntegerField(
        label=_("Start pending alert (minutes after the start time)"), min_value=1,
        help_text=_("A message still start pending this long after its start time means the workers or the scheduler may be down."),
    )  # fmt: skip
    min_throughput_per_minute = forms.IntegerField(
        label=_("Lowest throughput (messages per minute)"), min_value=0,
        help_text=_("An alert goes out when a send in progress processes fewer messages per minute than this over the last %(w)d minutes (0 turns it off).") % {"w": settings.ALERT_THROUGHPUT_WINDOW_MINUTES},
    )  # fmt: skip
    autopause_rate_percent = forms.DecimalField(
        label=_("Auto-pause when bounces + errors exceed (%)"), min_value=Decimal("0.01"), max_value=100, decimal_places=2,
        help_text=_("The send pauses itself past this limit: a broken list or a blocked sender stops before it burns the domain's reputation."),
    )  # fmt: skip
    autopause_min_processed = forms.IntegerField(
        label=_("…once at least this many messages were processed"), min_value=0
    )

    def __init__(self, *args, thresholds, policy, **kwargs):
        kwargs.setdefault(
            "initial",
            {
                "bounce_rate_percent": _percent(thresholds.bounce_rate),
                "bounce_min_processed": thresholds.bounce_min_processed,
                "start_pending_minutes": thresholds.start_pending_minutes,
                "min_throughput_per_minute": thresholds.min_throughput_per_minute,
                "autopause_rate_percent": _percent(policy.autopause_bounce_rate),
                "autopause_min_processed": policy.autopause_min_processed,
            },
        )
        super().__init__(*args, **kwargs)
        for name, value in self.defaults().items():
            self.fields[name].default_value = value  # shown under each field

    @staticmethod
    def defaults() -> dict:
        return {
            "bounce_rate_percent": _percent(settings.ALERT_BOUNCE_RATE),
            "bounce_min_processed": settings.ALERT_BOUNCE_MIN_PROCESSED,
            "start_pending_minutes": settings.ALERT_START_PENDING_MINUTES,
            "min_throughput_per_minute": settings.ALERT_MIN_THROUGHPUT_PER_MINUTE,
            "autopause_rate_percent": _percent(settings.AUTOPAUSE_BOUNCE_RATE),
            "autopause_min_processed": settings.AUTOPAUSE_MIN_PROCESSED,
        }

    def service_kwargs(self) -> dict:
        c = self.cleaned_data
        return {
            "bounce_rate": float(c["bounce_rate_percent"] / 100),
            "bounce_min_processed": c["bounce_min_processed"],
            "start_pending_minutes": c["start_pending_minutes"],
            "min_throughput_per_minute": c["min_throughput_per_minute"],
            "autopause_bounce_rate": float(c["autopause_rate_percent"] / 100),
            "autopause_min_processed": c["autopause_min_processed"],
        }
