"""Consent at send time (DOMAIN.md §5, "Consent is checked again when each message goes").

One rule, written once in SQL, used by the sender's claim (one statement per claimed chunk) and by
the count the Confirm send dialog shows: a recipient whose profile, since preparation, was deleted,
unsubscribed or denylisted (the profile's flag for the channel), or whose address is now On
denylist or in Quarantine for the channel, is not sent. The cause is an exclusion cause.
"""

from __future__ import annotations

from django.db import connection

from audiences.models import Channel, Profile, Quarantine

from .models import ExclusionCause, SendingLog, SendingStatus

DENYLIST_FLAG = {Channel.EMAIL: "email_denylisted", Channel.SMS: "sms_denylisted"}


def left_cause_sql(*, channel: str, log: str = "s", profile: str = "p", quarantine: str = "q") -> str:
    """A CASE expression naming why the recipient of sending log `log` may not be sent now (an
    ExclusionCause value), NULL when it may. Needs `profile` LEFT JOINed on the log's profile and
    `quarantine` LEFT JOINed on (channel, lower(address)). Only constants are inlined."""
    flag = DENYLIST_FLAG[Channel(channel)]
    return (
        f"CASE WHEN {log}.profile_id IS NULL OR {profile}.id IS NULL THEN '{ExclusionCause.PROFILE_DELETED.value}'"
        f" WHEN {profile}.{flag} THEN '{ExclusionCause.DENYLIST.value}'"
        f" WHEN {quarantine}.status = '{Quarantine.Status.DENYLIST.value}' THEN '{ExclusionCause.DENYLIST.value}'"
        f" WHEN {quarantine}.status = '{Quarantine.Status.QUARANTINE.value}' THEN '{ExclusionCause.QUARANTINE.value}'"
        f" END"
    )


def left_joins_sql(*, log: str = "s", profile: str = "p", quarantine: str = "q") -> str:
    """The joins `left_cause_sql` needs; one parameter: the channel."""
    return (
        f" LEFT JOIN {Profile._meta.db_table} {profile} ON {profile}.id = {log}.profile_id"
        f" LEFT JOIN {Quarantine._meta.db_table} {quarantine} ON {quarantine}.channel = %s AND {quarantine}.address = LOWER({log}.address)"
    )


def left_since_preparation(*, delivery) -> dict[str, int]:
    """Recipients still to send (pending) who left since preparation, counted per cause, in one query."""
    table = SendingLog._meta.db_table
    cause = left_cause_sql(channel=delivery.channel)
    sql = (
        f"SELECT cause, COUNT(*) FROM (SELECT {cause} AS cause FROM {table} s{left_joins_sql()}"
        f" WHERE s.delivery_id = %s AND s.status = %s) x WHERE cause IS NOT NULL GROUP BY cause"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [delivery.channel, delivery.pk, SendingStatus.PENDING])
        return dict(cursor.fetchall())
