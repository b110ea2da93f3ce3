"""Compute stats clicked at the same instant from two places: the conditional UPDATE lets one through."""

import threading

import pytest
from django.db import connection

from accounts.errors import DispatchError
from kpis.models import KpiSnapshot
from kpis.services import kpis_compute_request

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_two_simultaneous_compute_stats_start_one_recompute(postgres_only, marketer, ops, make_delivery, monkeypatch):
    d = make_delivery()
    enqueued, refused = [], []
    monkeypatch.setattr("kpis.services._enqueue", lambda delivery_id: enqueued.append(delivery_id))
    barrier = threading.Barrier(2)

    def click(user):
        try:
            barrier.wait()
            kpis_compute_request(delivery=d, user=user)
        except DispatchError as error:
            refused.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(u,)) for u in (marketer, ops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert enqueued == [d.pk] and refused == ["compute_running"]
    assert KpiSnapshot.objects.get(pk=d.pk).computing_since is not None
