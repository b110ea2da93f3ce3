"""`{% load kpis_tags %}{% mini_kpis delivery %}`: recipients, open rate and click rate for the message list.

It reads the stored snapshot only (never the logs): with the list's queryset built with
`select_related("kpis")`, fifty rows cost no extra query.
"""

from django import template

from ..figures import NO_RATE, format_count, kpi_figures
from ..selectors import snapshot_of

register = template.Library()


@register.inclusion_tag("kpis/mini_kpis.html")
def mini_kpis(delivery):
    snapshot = snapshot_of(delivery)
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
