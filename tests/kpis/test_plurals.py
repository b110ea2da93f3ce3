"""Counts with a noun in the Deployment window read right in the singular."""

import pytest
from django.urls import reverse

from deliveries.models import SendingStatus
from tracking.models import TrackingLog


@pytest.mark.parametrize(("machine_clicks", "text"), [(1, "1 more click by a machine (not counted)"), (2, "2 more clicks by machines (not counted)")])
def test_tracked_urls_say_how_many_clicks_machines_made(machine_clicks, text, client, ops, make_delivery, add_logs, track, tracked_url):
    d = make_delivery()
    (log,) = add_logs(d, 1, SendingStatus.SENT)
    url = tracked_url(d)
    track(log, TrackingLog.Kind.CLICK, url=url, machine=True, times=machine_clicks)
    client.force_login(ops)
    html = client.get(reverse("kpis:deployment", args=[d.pk]), {"tab": "urls"}).content.decode()
    assert f'title="{text}"' in html
