"""The Deployment window's charts: distinct tick labels, dates on ranges of several days, and no
line made up across a send that took a second."""

from datetime import UTC, datetime, timedelta

import pytest

from kpis import charts

T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def labels(chart) -> list[str]:
    return [label for _x, label, _anchor in chart.x_ticks]


def test_a_send_of_one_second_draws_no_line_and_says_when(settings):
    settings.TIME_ZONE = "UTC"
    chart = charts.processed_chart("second", [(T + timedelta(seconds=3), 40)], started_at=T + timedelta(seconds=3))
    assert chart.lines == [] and chart.empty
    assert chart.empty_text == "40 messages processed within one second, at 10:00:03."


def test_a_short_send_has_no_repeated_time_on_its_axis(settings):
    settings.TIME_ZONE = "UTC"
    rows = [(T, 10), (T + timedelta(minutes=1), 5)]  # two minutes: five ticks would repeat 10:00 and 10:01
    chart = charts.processed_chart("minute", rows, started_at=T)
    assert len(labels(chart)) == len(set(labels(chart))) and labels(chart)[0] == "10:00"
    seconds = charts.processed_chart("second", [(T, 3), (T + timedelta(seconds=2), 4)], started_at=T)
    assert labels(seconds)[0] == "10:00:00" and len(set(labels(seconds))) == len(labels(seconds))


def test_ranges_over_several_days_carry_the_date(settings):
    settings.TIME_ZONE = "UTC"
    rows = [(T + timedelta(hours=h), "open", 3) for h in range(0, 60, 6)]
    chart = charts.engagement_chart("hour", rows)
    assert labels(chart)[0] == "Mar 2 10:00" and labels(chart)[-1].startswith("Mar 4 ")
    assert len(set(labels(chart))) == len(labels(chart))
    hours = charts.processed_chart("hour", [(T, 5), (T + timedelta(days=1, hours=2), 5)], started_at=T)
    assert labels(hours)[0] == "Mar 2 10:00" and labels(hours)[-1].startswith("Mar 3 ")
    same_day = charts.engagement_chart("hour", [(T, "open", 1), (T + timedelta(hours=5), "click", 2)])
    assert labels(same_day)[0] == "10:00"  # one day: the time alone


@pytest.mark.django_db
def test_a_short_send_is_bucketed_per_second(marketer):
    from deliveries.models import Delivery, SendingLog, SendingStatus, State
    from kpis.selectors import processed_over_time

    d = Delivery.objects.create(label="Quick", state=State.FINISHED, started_at=T, finished_at=T + timedelta(seconds=2))
    SendingLog.objects.bulk_create(
        [SendingLog(delivery=d, address=f"a{i}@example.com", status=SendingStatus.SENT, event_at=T + timedelta(seconds=i % 2, microseconds=i)) for i in range(6)]
    )
    unit, rows = processed_over_time(delivery=d)
    assert unit == "second" and [n for _b, n in rows] == [3, 3]
