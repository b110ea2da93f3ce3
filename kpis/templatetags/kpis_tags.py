"""`{% load kpis_tags %}{% mini_kpis delivery %}`: recipients, open rate and click rate for the message list.

It reads the stored snapshot only (never the logs). deliveries' message list fetches no KPI
(deliveries sits below kpis): `{% kpi_snapshots page as snapshots %}` reads the snapshots of the
page's rows in one query, then `{% mini_kpis d snapshots %}` costs none. A queryset built with
`select_related("kpis")` (above deliveries) needs no `snapshots`.
"""

from django import template

from ..figures import NO_RATE, format_count, kpi_figures
from ..selectors import snapshot_of, snapshots_of

register = template.Library()


@register.simple_tag
def kpi_snapshots(deliveries) -> dict:
    """The KPI snapshots of these messages (a page of a list), by message id: one query."""
    return snapshots_of(list(deliveries))


@register.inclusion_tag("kpis/mini_kpis.html")
def mini_kpis(delivery, snapshots=None):
    snapshot = snapshots.get(delivery.pk) if snapshots is not None else snapshot_of(delivery)
    if snapshot is None or snapshot.computed_at is None:
        return {
            "delivery": delivery,
            "computed": False,
            "recipients": format_count(delivery.to_deliver_count or None),
            "open_rate": NO_RATE,
            "click_rate": NO_RATE,
        }
    figures = kpi_figures(snapshot)
    return {
        "delivery": delivery,
        "computed": True,
        "snapshot": snapshot,
        "recipients": figures["to_deliver"].count_display,
        "open_rate": figures["open"].rate_display,
        "click_rate": figures["click_through"].rate_display,
        "open_formula": figures["open"].formula,
        "click_formula": figures["click_through"].formula,
    }
