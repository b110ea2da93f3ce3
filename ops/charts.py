"""The dashboard's chart: messages processed per hour, as server-rendered SVG bars (no JavaScript,
no CDN). Geometry here, markup in templates/ops/_chart.html."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.html import format_html_join
from django.utils.translation import gettext as _

from kpis.charts import nice_max

WIDTH, HEIGHT = 760, 180
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 10, 28  # margins for the axes' labels


@dataclass
class BarChart:
    title: str
    description: str
    empty_text: str
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[dict] = field(default_factory=list)  # {"x", "y", "w", "h", "title"}
    x_ticks: list[tuple[float, str, str]] = field(default_factory=list)  # (x, label, text-anchor)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    legend: str = ""

    @property
    def empty(self) -> bool:
        return not self.bars

    @property
    def bars_svg(self) -> str:
        """The bars' markup built here in one pass (up to 720 of them: cheaper than a template loop)."""
        return format_html_join(
            "",
            '<rect class="bar processed" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            ((b["x"], b["y"], b["w"], b["h"], b["title"]) for b in self.bars),
        )

    @property
    def plot(self) -> dict:
        return {"left": LEFT, "top": TOP, "right": self.width - RIGHT, "bottom": self.height - BOTTOM}


def _y(value: float, top: int) -> float:
    return round(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / top, 1)


def processed_per_hour_chart(unit: str, rows: list[tuple[datetime, int]], *, since: datetime) -> BarChart:
    """One bar per hour (or day) from `since` to now; hours without activity show no bar."""
    per = _("hour") if unit == "hour" else _("day")
    chart = BarChart(
        title=_("Messages processed per %(unit)s") % {"unit": per},
        description=_("Messages delivered or bounced per %(unit)s over the period, all listed messages together.")
        % {"unit": per},
        empty_text=_("No message was processed in this period."),
        legend=_("Processed (delivered + bounces and errors)"),
    )
    if not rows:
        return chart
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    start = timezone.localtime(since).replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        start = start.replace(hour=0)
    count = max(1, int((timezone.now() - start) / step) + 1)
    slot = (WIDTH - LEFT - RIGHT) / count
    bar_w = max(1.0, round(slot * 0.8, 1))
    top = nice_max(max(n for _b, n in rows))
    for bucket, n in rows:
        index = int((bucket - start) / step)
        if not 0 <= index < count:
            continue
        y = _y(n, top)
        label = (
            f"{timezone.localtime(bucket):%Y-%m-%d %H:%M}"
            if unit == "hour"
            else f"{timezone.localtime(bucket):%Y-%m-%d}"
        )
        chart.bars.append(
            {
                "x": round(LEFT + slot * index + (slot - bar_w) / 2, 1),
                "y": y,
                "w": bar_w,
                "h": round(HEIGHT - BOTTOM - y, 1),
                "title": f"{label}: {n:,}",  # plain formatting: one title per bar, up to 168 of them
            }
        )
    chart.y_ticks = [(_y(top * i / 4, top), number_format(round(top * i / 4), force_grouping=True)) for i in range(5)]
    ticks = min(count, 6)
    for i in range(ticks):
        index = round(i * (count - 1) / max(ticks - 1, 1))
        moment = timezone.localtime(start + step * index)
        anchor = "start" if i == 0 else "end" if i == ticks - 1 else "middle"
        x = LEFT if i == 0 else (WIDTH - RIGHT if i == ticks - 1 else round(LEFT + slot * index + slot / 2, 1))
        chart.x_ticks.append((x, date_format(moment, "H:i" if count <= 24 else "M j"), anchor))
    return chart
