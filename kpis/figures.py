"""The KPIs of DOMAIN.md §4 as data: label, value, rate and formula, formatted in one place.

Pages (tiles, tooltips), the template tag and the API all read these definitions, so a rate is
computed and shown the same way everywhere; a zero denominator gives no rate ("–"), never an error.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _

NO_RATE = "–"  # en dash: what a rate with a zero denominator shows


def rate(numerator: int, denominator: int) -> Decimal | None:
    """numerator / denominator as a percentage rounded to one decimal, or None when the denominator is 0."""
    if not denominator:
        return None
    return (Decimal(numerator) * 100 / Decimal(denominator)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def format_rate(value: Decimal | None) -> str:
    """'12.5%' (localized decimal separator), or '–' for no rate."""
    if value is None:
        return NO_RATE
    return f"{number_format(value, decimal_pos=1)}%"


def format_count(value: int | None) -> str:
    return NO_RATE if value is None else number_format(value, force_grouping=True)


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    count: int | None
    rate: Decimal | None
    formula: str
    show_rate: bool = True

    @property
    def rate_display(self) -> str:
        return format_rate(self.rate)

    @property
    def count_display(self) -> str:
        return format_count(self.count)


# key, label, numerator field, denominator, formula (the tooltip). Denominator names: to_deliver, sent, delivered.
RATES = (
    ("sent", _("Sent"), "sent", "to_deliver", _("Sent = delivered + bounces and errors; % of the messages to deliver")),
    ("delivered", _("Delivered"), "delivered", "sent", _("Delivered = count(status = sent); % = delivered / sent")),
    (
        "bounces",
        _("Bounces + errors"),
        "bounces",
        "sent",
        _("Bounces + errors = count(status = failed); % = bounces / sent"),
    ),
    ("hard_bounces", _("Hard bounces"), "hard_bounces", "sent", _("Hard bounce rate = count(failed, hard) / sent")),
    ("soft_bounces", _("Soft bounces"), "soft_bounces", "sent", _("Soft bounce rate = count(failed, soft) / sent")),
    (
        "open",
        _("Open rate"),
        "unique_opens",
        "delivered",
        _(
            "Open rate = unique opens / delivered. Unique opens: messages with at least one human open, "
            "click, mirror-page view or opt-out (a click implies an open); machine opens are not counted."
        ),
    ),
    (
        "click_through",
        _("Click-through rate"),
        "unique_clicks",
        "delivered",
        _("Click-through rate = unique clicks / delivered. Unique clicks: messages with at least one human click."),
    ),
    (
        "unsubscribe",
        _("Unsubscribe rate"),
        "opt_outs",
        "delivered",
        _("Unsubscribe rate = messages with an opt-out / delivered"),
    ),
    (
        "mirror_page",
        _("Mirror page rate"),
        "mirror_pages",
        "delivered",
        _("Mirror page rate = messages with a mirror-page view / delivered"),
    ),
)
TO_DELIVER_FORMULA = _(
    "To deliver = sending logs created by preparation (targeted − excluded), less the recipients who left since preparation"
)


def _value(snapshot, name: str) -> int:
    return getattr(snapshot, name) if snapshot is not None else 0


def kpi_rates(snapshot) -> dict[str, Decimal | None]:
    """Every rate of DOMAIN.md §4 by key (None when its denominator is 0)."""
    return {key: rate(_value(snapshot, num), _value(snapshot, den)) for key, _l, num, den, _f in RATES}


def kpi_figures(snapshot) -> dict[str, Figure]:
    """The figures a page shows, by key (`to_deliver` and every key of RATES)."""
    figures = {
        "to_deliver": Figure(
            "to_deliver", str(_("To deliver")), _value(snapshot, "to_deliver"), None, str(TO_DELIVER_FORMULA), False
        )
    }
    for key, label, num, den, formula in RATES:
        figures[key] = Figure(
            key, str(label), _value(snapshot, num), rate(_value(snapshot, num), _value(snapshot, den)), str(formula)
        )
    return figures
