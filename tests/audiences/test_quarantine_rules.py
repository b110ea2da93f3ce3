"""DOMAIN.md §5, step by step with the clock moved."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from audiences.models import Quarantine
from audiences.selectors import quarantined_addresses
from audiences.services import (
    quarantine_cleanup,
    quarantine_record_failure,
    quarantine_record_failures,
    quarantine_record_success,
    quarantine_record_successes,
)

S = Quarantine.Status
pytestmark = pytest.mark.django_db
DAY0 = timezone.make_aware(datetime(2026, 3, 2, 9, 0))


def soft(address, at, reason="mailbox_full"):
    quarantine_record_failure(address=address, channel="email", failure_type="soft", reason=reason, text="452 4.2.2 Mailbox full", at=at)


def row(address="jane@example.com"):
    return Quarantine.objects.get(address=address, channel="email")


def test_a_hard_error_quarantines_at_once_and_addresses_are_lower_cased():
    quarantine_record_failure(address="Jane@Example.com", channel="email", failure_type="hard", reason="user_unknown",
                              text="550 5.1.1 User unknown", at=DAY0)
    r = row()
    assert (r.status, r.error_count, r.reason, r.last_error_at) == (S.QUARANTINE, 1, "user_unknown", DAY0)
    assert "jane@example.com" in set(quarantined_addresses(channel="email", statuses=[S.QUARANTINE]).values_list("address", flat=True))


def test_five_soft_errors_on_five_days_quarantine_on_the_fifth():
    for day in range(4):
        soft("jane@example.com", DAY0 + timedelta(days=day))
        assert (row().status, row().error_count) == (S.ERRONEOUS, day + 1)
    soft("jane@example.com", DAY0 + timedelta(days=4))
    assert (row().status, row().error_count) == (S.QUARANTINE, 5)


def test_two_soft_errors_on_one_day_count_once():
    soft("jane@example.com", DAY0)
    soft("jane@example.com", DAY0 + timedelta(hours=5), reason="unreachable")
    r = row()
    assert (r.status, r.error_count, r.reason) == (S.ERRONEOUS, 1, "unreachable")
    soft("jane@example.com", DAY0 + timedelta(days=1))
    assert row().error_count == 2


def test_a_complaint_puts_the_address_on_denylist_and_an_ignored_error_changes_nothing():
    quarantine_record_failure(address="jane@example.com", channel="email", failure_type="ignored", reason="ignored", text="", at=DAY0)
    assert not Quarantine.objects.exists()
    quarantine_record_failure(address="jane@example.com", channel="email", failure_type="complaint", reason="refused", text="spam", at=DAY0)
    assert row().status == S.DENYLIST
    quarantine_record_failure(address="jane@example.com", channel="email", failure_type="hard", reason="user_unknown", text="", at=DAY0)
    assert row().status == S.DENYLIST  # a hard error does not lift the denylist


def test_a_success_returns_erroneous_to_valid_but_never_lifts_quarantine():
    soft("jane@example.com", DAY0)
    quarantine_record_failure(address="bob@example.com", channel="email", failure_type="hard", reason="user_unknown", text="", at=DAY0)
    quarantine_record_success(address="JANE@example.com", channel="email", at=DAY0 + timedelta(hours=1))
    quarantine_record_successes(addresses=["bob@example.com", "nobody@example.com"], channel="email", at=DAY0)
    assert (row().status, row().error_count, row().last_delivery_at) == (S.VALID, 0, DAY0 + timedelta(hours=1))
    assert row("bob@example.com").status == S.QUARANTINE
    assert not Quarantine.objects.filter(address="nobody@example.com").exists()


def test_cleanup_after_ten_days_and_thirty_after_mailbox_full():
    soft("plain@example.com", DAY0, reason="unreachable")
    soft("full@example.com", DAY0, reason="mailbox_full")
    quarantine_record_failure(address="hard@example.com", channel="email", failure_type="hard", reason="user_unknown", text="", at=DAY0)
    quarantine_record_failure(address="spam@example.com", channel="email", failure_type="complaint", reason="refused", text="", at=DAY0)

    assert quarantine_cleanup(now=DAY0 + timedelta(days=9, hours=23)) == 0
    assert quarantine_cleanup(now=DAY0 + timedelta(days=10)) == 1
    assert row("plain@example.com").status == S.VALID
    assert row("full@example.com").status == S.ERRONEOUS
    assert quarantine_cleanup(now=DAY0 + timedelta(days=29)) == 0
    assert quarantine_cleanup(now=DAY0 + timedelta(days=30)) == 1
    assert row("full@example.com").status == S.VALID
    quarantine_cleanup(now=DAY0 + timedelta(days=400))
    assert row("hard@example.com").status == S.QUARANTINE
    assert row("spam@example.com").status == S.DENYLIST


def test_the_batch_form_uses_a_constant_number_of_queries(django_assert_max_num_queries):
    failures = [
        {"address": f"user{i}@example.com", "channel": "email", "failure_type": "hard" if i % 2 else "soft",
         "reason": "user_unknown" if i % 2 else "mailbox_full", "text": "", "at": DAY0}
        for i in range(40)
    ]
    with django_assert_max_num_queries(6):
        assert quarantine_record_failures(failures=failures) == 40
    assert Quarantine.objects.filter(status=S.QUARANTINE).count() == 20
    assert Quarantine.objects.filter(status=S.ERRONEOUS).count() == 20
    with django_assert_max_num_queries(6):
        quarantine_record_failures(failures=failures + failures)  # the same day again: soft ones still count once
    assert Quarantine.objects.filter(status=S.ERRONEOUS, error_count=1).count() == 20
    assert Quarantine.objects.filter(status=S.QUARANTINE, error_count=3).count() == 20
