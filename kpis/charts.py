"""Server-rendered SVG charts (no JavaScript, no CDN): geometry here, markup in templates/kpis/_chart.html."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 10, 28  # margins for the axes' labels
MAX_BUCKETS = 200


@dataclass
class Chart:
    title: str
    description: str  # what a screen reader says; also the <desc>
    width: int = WIDTH
    height: int = HEIGHT
    lines: list[dict] = field(default_factory=list)  # {"label", "css", "points": "x,y x,y"}
    bars: list[dict] = field(default_factory=list)  # {"x", "y", "w", "h", "css", "title"}
    x_ticks: list[tuple[float, str, str]] = field(default_factory=list)  # (x, label, text-anchor)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css, label)
    empty_text: str = ""

    @property
    def empty(self) -> bool:
        return not self.lines and not self.bars

    @property
    def plot(self) -> dict:
        return {"left": LEFT, "top": TOP, "right": self.width - RIGHT, "bottom": self.height - BOTTOM}


def nice_max(value: int) -> int:
    """A round upper bound for the y axis (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _y_ticks(top_value: int) -> list[tuple[float, str]]:
    """Round steps: 0–50 by 10, 0–20 by 5, 0–2 by 1."""
    intervals = min(5 if str(top_value)[0] in "15" else 4, top_value)
    return [
        (_y(top_value * i / intervals, top_value), number_format(top_value * i // intervals, force_grouping=True))
        for i in range(intervals + 1)
    ]


def _anchor(i: int, count: int) -> str:
    """The first and last x labels hug the plot's edges so they are never cut off."""
    return "start" if i == 0 else "end" if i == count - 1 else "middle"


def _y(value: float, top_value: int) -> float:
    span = HEIGHT - TOP - BOTTOM
    return round(HEIGHT - BOTTOM - span * value / top_value, 1)


def _x(fraction: float) -> float:
    return round(LEFT + (WIDTH - LEFT - RIGHT) * fraction, 1)


STEPS = {"second": timedelta(seconds=1), "minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _label(moment: datetime, unit: str, *, days: bool = False) -> str:
    """A tick label: the day for daily buckets; the time (with seconds for a short send); the day
    and the time when the range covers several days (else the same hour repeats on each day)."""
    local = timezone.localtime(moment)
    if unit == "day":
        return date_format(local, "M j")
    time_format = "H:i:s" if unit == "second" else "H:i"
    return date_format(local, f"M j {time_format}" if days else time_format)


def _several_days(t0: datetime, t1: datetime) -> bool:
    return timezone.localtime(t0).date() != timezone.localtime(t1).date()


def _distinct(ticks: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """Drop a tick whose label repeats an earlier one (a short range has fewer distinct times than ticks)."""
    seen, kept = set(), []
    for tick in ticks:
        if tick[1] not in seen:
            seen.add(tick[1])
            kept.append(tick)
    return kept


def processed_chart(unit: str, rows: list[tuple[datetime, int]], *, started_at: datetime | None) -> Chart:
    """Cumulative messages processed over time, one point per bucket."""
    chart = Chart(
        title=_("Messages processed over time"),
        description=_("Cumulative count of messages that reached a final status, per %(unit)s.") % {"unit": unit},
        empty_text=_("No message has been processed yet."),
    )
    if not rows:
        return chart
    step = STEPS.get(unit, timedelta(hours=1))
    total = sum(n for _b, n in rows)
    if len(rows) == 1:  # everything within one bucket: a line across the chart would invent a duration
        chart.empty_text = ngettext(
            "%(n)s message processed within one %(unit)s, at %(when)s.",
            "%(n)s messages processed within one %(unit)s, at %(when)s.",
            total,
        ) % {"n": number_format(total, force_grouping=True), "unit": unit, "when": _label(rows[0][0], unit)}
        return chart
    t0 = min(rows[0][0], started_at) if started_at else rows[0][0]
    t1 = max(rows[-1][0] + step, t0 + step)
    span = (t1 - t0).total_seconds()
    top = nice_max(total)
    points, running = [(_x(0), _y(0, top))], 0
    for bucket, n in rows:
        running += n
        points.append((_x(((bucket + step) - t0).total_seconds() / span), _y(running, top)))
    chart.lines.append({"label": _("Processed"), "css": "processed", "points": " ".join(f"{x},{y}" for x, y in points)})
    chart.y_ticks = _y_ticks(top)
    days = _several_days(t0, t1)
    chart.x_ticks = _distinct([(_x(i / 4), _label(t0 + (t1 - t0) * i / 4, unit, days=days), _anchor(i, 5)) for i in range(5)])
    chart.legend = [("processed", _("Processed (cumulative)"))]
    return chart


def engagement_chart(unit: str, rows: list[tuple[datetime, str, int]]) -> Chart:
    """Human opens and clicks per hour (or day) as side-by-side bars."""
    chart = Chart(
        title=_("Opens and clicks per %(unit)s") % {"unit": unit},
        description=_("Human opens and clicks per %(unit)s; machine events are not counted.") % {"unit": unit},
        empty_text=_("No open or click yet."),
    )
    if not rows:
        return chart
    step = STEPS.get(unit, timedelta(days=1))
    first = rows[0][0]
    days = unit != "day" and _several_days(first, rows[-1][0])
    by_bucket: dict[int, dict[str, int]] = {}
    for bucket, kind, n in rows:
        index = round((bucket - first) / step)
        if index >= MAX_BUCKETS:
            break
        by_bucket.setdefault(index, {})[kind] = n
    count = max(by_bucket) + 1
    top = nice_max(max(max(v.values()) for v in by_bucket.values()))
    slot = (WIDTH - LEFT - RIGHT) / count
    bar_w = max(1.0, round(slot * 0.4, 1))
    for index, kinds in sorted(by_bucket.items()):
        moment = _label(first + step * index, unit, days=days)
        for offset, (kind, css, label) in enumerate((("open", "opens", _("Opens")), ("click", "clicks", _("Clicks")))):
            n = kinds.get(kind, 0)
            if not n:
                continue
            y = _y(n, top)
            chart.bars.append(
                {
                    "x": round(LEFT + slot * index + slot * 0.1 + bar_w * offset, 1),
                    "y": y,
                    "w": bar_w,
                    "h": round(HEIGHT - BOTTOM - y, 1),
                    "css": css,
                    "title": f"{moment} · {label}: {number_format(n, force_grouping=True)}",
                }
            )
    chart.y_ticks = _y_ticks(top)
    ticks = min(count, 4 if days else 6)  # longer labels: fewer of them
    indexes = sorted({round(i * (count - 1) / max(ticks - 1, 1)) for i in range(ticks)})
    chart.x_ticks = _distinct(
        [(round(LEFT + slot * index + slot / 2, 1), _label(first + step * index, unit, days=days), "middle") for index in indexes]
    )
    chart.legend = [("opens", _("Opens")), ("clicks", _("Clicks"))]
    return chart
