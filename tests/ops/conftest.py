"""Builders for ops tests. Messages with their live counters (the dashboard and the alert check read
counters, never the logs) and sending logs for the throughput criterion come from the shared
`make_delivery` and `add_logs` (tests/conftest.py)."""


import pytest

from tests.deliveries.conftest import audience, new_delivery, ready_delivery  # noqa: F401  (real sends)


@pytest.fixture(autouse=True)
def _fast_tests(settings):
    settings.HEALTH_CACHE_SECONDS = 0  # each check in a test sees the parts as they are now


@pytest.fixture
def supervisors(ops, make_user):
    """Two Delivery supervisors (the alert recipients) and an administrator who is not one."""
    from accounts import roles

    second = make_user("ops2", roles.DELIVERY_SUPERVISORS, first_name="Sam", last_name="Second")
    make_user("boss", roles.ADMINISTRATORS)
    return [ops, second]
