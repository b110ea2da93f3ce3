"""Writes of the ops app: alert thresholds, the alert check and its emails, acknowledgement, and the
hourly counter of messages processed.

The alert check is set-based: one query per criterion over the messages of the last 24 hours (the
throughput criterion adds one index-only count per send in progress), then one INSERT for the
alerts not yet stored today (unique per message, criterion and day). Emails go out after that,
claimed by a conditional UPDATE so that two checks never mail the same alert twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import F, Max
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.errors import DispatchError, InvalidInput
from accounts.roles import ACCESS, ADMINISTRATION, DELIVERY_SUPERVISORS, role_required_message
from accounts.selectors import user_has_any_role
from accounts.services import require_role
from deliveries.models import SENDING_STATES, Delivery, SendingLog, State
from deliveries.selectors import delivery_state_allows
from deliveries.services import delivery_alert_flag_set, sending_policy_get, sending_policy_update, who

from .models import Alert, AlertThresholds, Criterion, ProcessedHour

log = logging.getLogger(__name__)

MONITOR_ROLES = ACCESS["monitor"]
CHECK_STATES_DONE = (State.FINISHED, State.STOPPED, State.FAILED)


def require_monitor(*, user) -> None:
    """Monitor deliveries or Administration, else PermissionDenied naming both."""
    if not user_has_any_role(user=user, roles=MONITOR_ROLES):
        raise PermissionDenied(role_required_message(*MONITOR_ROLES))


# --- thresholds -----------------------------------------------------------------------------
def thresholds_get() -> AlertThresholds:
    """The stored thresholds, or the defaults from settings (not saved)."""
    row = AlertThresholds.objects.order_by("pk").first()
    if row is None:
        row = AlertThresholds(
            bounce_rate=settings.ALERT_BOUNCE_RATE,
            bounce_min_processed=settings.ALERT_BOUNCE_MIN_PROCESSED,
            start_pending_minutes=settings.ALERT_START_PENDING_MINUTES,
            min_throughput_per_minute=settings.ALERT_MIN_THROUGHPUT_PER_MINUTE,
        )
    return row


def thresholds_update(
    *,
    user,
    bounce_rate: float,
    bounce_min_processed: int,
    start_pending_minutes: int,
    min_throughput_per_minute: int,
    autopause_bounce_rate: float,
    autopause_min_processed: int,
) -> AlertThresholds:
    """Change the alert thresholds and the auto-pause limit together (Administration)."""
    require_role(user=user, role=ADMINISTRATION)
    errors = []
    if not 0 < bounce_rate <= 1:
        errors.append(_("The bounce alert rate must be more than 0% and at most 100%."))
    if not 0 < autopause_bounce_rate <= 1:
        errors.append(_("The auto-pause rate must be more than 0% and at most 100%."))
    if bounce_rate >= autopause_bounce_rate:
        errors.append(
            _(
                "Set the alert rate below the auto-pause rate, so that people hear of trouble before the send pauses itself."
            )
        )
    if start_pending_minutes < 1:
        errors.append(_("The start pending delay must be at least 1 minute."))
    if min(bounce_min_processed, min_throughput_per_minute, autopause_min_processed) < 0:
        errors.append(_("Counts cannot be negative."))
    if errors:
        raise InvalidInput(" ".join(errors), code="invalid")
    with transaction.atomic():
        row = AlertThresholds.objects.select_for_update().order_by("pk").first() or AlertThresholds()
        row.bounce_rate, row.bounce_min_processed = bounce_rate, bounce_min_processed
        row.start_pending_minutes, row.min_throughput_per_minute = start_pending_minutes, min_throughput_per_minute
        row.updated_by = user
        row.save()
        sending_policy_update(
            user=user, autopause_bounce_rate=autopause_bounce_rate, autopause_min_processed=autopause_min_processed
        )
    return row


# --- the alert check --------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    delivery_id: int
    criterion: str
    summary: str
    event_at: datetime | None = None  # for an event (a failure, an auto-pause): alert it once, not once a day


def _pct(value: float) -> str:
    """0.0625 -> '6.3%', 0.05 -> '5%' (rounded half up, like the KPIs)."""
    text = str(Decimal(str(value * 100)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    return text.removesuffix(".0") + "%"


def _basis_points(rate: float) -> int:
    """A rate in hundredths of a percent: thresholds compare in integers (5% of 100 is exactly 5)."""
    return round(rate * 10_000)


def _findings(*, now: datetime, criteria: set[str], t: AlertThresholds) -> list[Finding]:
    since = now - timedelta(hours=settings.ALERT_LOOKBACK_HOURS)
    found: list[Finding] = []
    if Criterion.SEND_FAILED in criteria:
        for pk, finished in Delivery.objects.filter(state=State.FAILED, finished_at__gte=since).values_list(
            "pk", "finished_at"
        ):
            found.append(
                Finding(
                    pk,
                    Criterion.SEND_FAILED,
                    _("The send failed at %(when)s: every message was refused. Check the sending logs for the reasons.")
                    % {"when": _when(finished)},
                    finished,
                )
            )
    if Criterion.PREPARATION_FAILED in criteria:
        for pk, updated in Delivery.objects.filter(state=State.PREPARATION_FAILED, updated_at__gte=since).values_list(
            "pk", "updated_at"
        ):
            found.append(
                Finding(
                    pk,
                    Criterion.PREPARATION_FAILED,
                    _("The preparation failed: the journal lists the errors to correct before preparing again."),
                    updated,
                )
            )
    if Criterion.BOUNCES in criteria:
        bp = _basis_points(t.bounce_rate)
        rows = (
            Delivery.objects.filter(state__in=(*SENDING_STATES, *CHECK_STATES_DONE))
            .exclude(finished_at__lt=since)
            .annotate(done=F("sent_count") + F("failed_count"))
            .filter(done__gte=max(t.bounce_min_processed, 1), failed_count__gt=0)
            .filter(failed_count__gte=F("done") * bp / 10_000.0)
            .values_list("pk", "failed_count", "done")
        )
        for pk, failed, done in rows:
            if failed * 10_000 < done * bp:  # exact integer check (the SQL filter used a float)
                continue
            found.append(
                Finding(
                    pk,
                    Criterion.BOUNCES,
                    _(
                        "Bounces + errors reached %(rate)s of %(n)d processed messages (%(failed)d), above the alert threshold of %(limit)s after %(min)d."
                    )
                    % {
                        "rate": _pct(failed / done),
                        "n": done,
                        "failed": failed,
                        "limit": _pct(t.bounce_rate),
                        "min": t.bounce_min_processed,
                    },
                )
            )
    if Criterion.START_PENDING in criteria:
        late = now - timedelta(minutes=t.start_pending_minutes)
        for pk, at in Delivery.objects.filter(state=State.START_PENDING, scheduled_at__lte=late).values_list(
            "pk", "scheduled_at"
        ):
            minutes = int((now - at).total_seconds() // 60)
            found.append(
                Finding(
                    pk,
                    Criterion.START_PENDING,
                    _(
                        "Still start pending %(m)d minutes after its start time (%(when)s): the workers or the scheduler may be down. Check the system health."
                    )
                    % {"m": minutes, "when": _when(at)},
                )
            )
    if Criterion.LOW_THROUGHPUT in criteria:
        window = settings.ALERT_THROUGHPUT_WINDOW_MINUTES
        rows = Delivery.objects.filter(
            state=State.IN_PROGRESS,
            started_at__lte=now - timedelta(minutes=window),
            to_deliver_count__gt=F("processed_count"),
        )
        # a send its owner limited below the threshold is slow on purpose
        rows = rows.exclude(rate_limit_per_hour__lt=t.min_throughput_per_minute * 60).values_list(
            "pk", "to_deliver_count", "processed_count"
        )
        for pk, to_deliver, processed in rows:
            # an index-only count on (delivery, event_at), like the Deployment block's rate
            done = SendingLog.objects.filter(delivery_id=pk, event_at__gt=now - timedelta(minutes=window)).count()
            if done >= t.min_throughput_per_minute * window:
                continue
            found.append(
                Finding(
                    pk,
                    Criterion.LOW_THROUGHPUT,
                    _(
                        "Only %(n)d messages processed in the last %(w)d minutes (%(rate)s per minute, threshold %(min)d per minute) with %(left)d still to send: the workers may be overloaded, stopped or throttled by the relay."
                    )
                    % {
                        "n": done,
                        "w": window,
                        "rate": f"{done / window:.1f}",
                        "min": t.min_throughput_per_minute,
                        "left": to_deliver - processed,
                    },
                )
            )
    if Criterion.AUTOPAUSED in criteria:
        policy = sending_policy_get()
        for pk, at in Delivery.objects.filter(autopaused_at__gte=since).values_list("pk", "autopaused_at"):
            found.append(
                Finding(
                    pk,
                    Criterion.AUTOPAUSED,
                    _(
                        "The send paused itself at %(when)s: bounces + errors crossed the auto-pause limit (%(limit)s after %(min)d messages). Check the list and the sender, then resume or stop it."
                    )
                    % {
                        "when": _when(at),
                        "limit": _pct(policy.autopause_bounce_rate),
                        "min": policy.autopause_min_processed,
                    },
                    at,
                )
            )
    return found


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M} ({timezone.get_current_timezone_name()})"


def _not_alerted_yet(findings: list[Finding]) -> list[Finding]:
    """Drop the events already alerted: a failure or an auto-pause seen again after midnight (still
    inside the 24-hour window) is the same event, not a new day's alert."""
    events = [f for f in findings if f.event_at is not None]
    if not events:
        return findings
    last = {
        (delivery_id, criterion): raised
        for delivery_id, criterion, raised in Alert.objects.filter(
            delivery_id__in={f.delivery_id for f in events}, criterion__in={f.criterion for f in events}
        )
        .values("delivery_id", "criterion")
        .annotate(last=Max("raised_at"))
        .values_list("delivery_id", "criterion", "last")
    }
    return [
        f
        for f in findings
        if f.event_at is None
        or last.get((f.delivery_id, f.criterion)) is None
        or last[(f.delivery_id, f.criterion)] < f.event_at
    ]


def alerts_check(
    *, now: datetime | None = None, criteria: list[str] | None = None, notify: bool = True, delivery_ids=None
) -> list[Alert]:
    """Check the messages sent or sending in the last 24 hours (or only `delivery_ids`) against the
    criteria; store each new alert (once per message, criterion and day), flag its message, and
    email the supervisors. Returns the alerts created by this call."""
    now = now or timezone.now()
    wanted = set(criteria or Criterion.values)
    findings = _findings(now=now, criteria=wanted, t=thresholds_get())
    if delivery_ids is not None:
        only = set(delivery_ids)
        findings = [f for f in findings if f.delivery_id in only]
    day = timezone.localdate(now)
    created: list[Alert] = []
    findings = _not_alerted_yet(findings)
    if findings:
        existing = set(
            Alert.objects.filter(
                day=day, delivery_id__in={f.delivery_id for f in findings}, criterion__in=wanted
            ).values_list("delivery_id", "criterion")
        )
        new = [
            Alert(delivery_id=f.delivery_id, criterion=f.criterion, day=day, raised_at=now, summary=f.summary)
            for f in findings
            if (f.delivery_id, f.criterion) not in existing
        ]
        if new:
            with transaction.atomic():
                Alert.objects.bulk_create(new, ignore_conflicts=True)  # a concurrent check may have won a row
                created = list(
                    Alert.objects.filter(
                        day=day, raised_at=now, delivery_id__in={a.delivery_id for a in new}
                    ).select_related("delivery")
                )
                for delivery_id in sorted({a.delivery_id for a in created}):
                    delivery_alert_flag_set(delivery_id=delivery_id, open_alert=True)
            for a in created:
                log.warning("ops: alert %s on DM%s: %s", a.criterion, a.delivery_id, a.summary)
    if notify:
        alerts_notify(now=now)
    return created


# --- emails -----------------------------------------------------------------------------------
def supervisor_addresses() -> list[str]:
    """Email addresses of the active members of the Delivery supervisors group."""
    users = get_user_model().objects.filter(groups__name=DELIVERY_SUPERVISORS, is_active=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def _alert_lines(alert: Alert, site: str) -> list[str]:
    d = alert.delivery
    return [
        _("Alert on the message “%(label)s” (%(id)s), raised %(when)s:")
        % {"label": d.label, "id": d.human_id, "when": _when(alert.raised_at)},
        "",
        alert.summary,
        "",
        _("State: %(state)s. Owner: %(owner)s.")
        % {"state": State(d.state).label, "owner": who(d.created_by) if d.created_by_id else "—"},
        (_("Pause or stop the send from the message: %(url)s") if delivery_state_allows(delivery=d, action="stop") else _("Open the message: %(url)s"))
        % {"url": site + reverse("deliveries:detail", args=[d.pk])},
    ]


def alert_email(alerts: list[Alert], *, to: str) -> EmailMessage:
    """One message per person and check: a single alert says what and where in its subject; several
    come as a digest, so that a bad hour does not bury the supervisors' inboxes."""
    site = settings.SITE_URL
    if len(alerts) == 1:
        d = alerts[0].delivery
        subject = _("[Dispatch] Alert: %(criterion)s — %(label)s (%(id)s)") % {
            "criterion": alerts[0].get_criterion_display(),
            "label": d.label,
            "id": d.human_id,
        }
    else:
        subject = _("[Dispatch] %(n)d alerts on %(m)d messages") % {
            "n": len(alerts),
            "m": len({a.delivery_id for a in alerts}),
        }
    lines = []
    for i, alert in enumerate(alerts):
        if len(alerts) > 1:
            lines += (
                [f"{i + 1}. {alert.get_criterion_display()}", ""]
                if i == 0
                else ["", "—" * 20, "", f"{i + 1}. {alert.get_criterion_display()}", ""]
            )
        lines += _alert_lines(alert, site)
    lines += [
        "",
        _("Acknowledge on the deployment dashboard: %(url)s") % {"url": site + reverse("ops:dashboard") + "#alerts"},
        "",
        _("You receive this because you are in the Delivery supervisors group."),
    ]
    return EmailMessage(subject=subject, body="\n".join(lines), to=[to])


def alerts_notify(*, now: datetime | None = None) -> int:
    """Email every alert not emailed yet to the Delivery supervisors (one message per person: the
    alert, or a digest of them, over one connection). Alerts are claimed first by a conditional UPDATE; when the mail
    server fails they are released for the next check. Returns the number of messages sent."""
    stamp = now or timezone.now()
    pending = list(Alert.objects.filter(emailed_at__isnull=True).values_list("pk", flat=True)[:200])
    if not pending:
        return 0
    stamp = stamp + timedelta(microseconds=1)  # distinct from raised_at, unique to this claim
    Alert.objects.filter(pk__in=pending, emailed_at__isnull=True).update(emailed_at=stamp)
    claimed = list(
        Alert.objects.filter(pk__in=pending, emailed_at=stamp)
        .select_related("delivery", "delivery__created_by")
        .order_by("pk")
    )
    addresses = supervisor_addresses()
    if not addresses:
        log.warning(
            "ops: %d alert(s) not emailed: the Delivery supervisors group has no member with an email address",
            len(claimed),
        )
        return 0
    messages = [alert_email(claimed, to=addr) for addr in addresses]
    try:
        sent = get_connection(fail_silently=False).send_messages(messages) or 0
    except Exception:
        log.exception("ops: could not email %d alert(s); they will be retried at the next check", len(claimed))
        Alert.objects.filter(pk__in=[a.pk for a in claimed], emailed_at=stamp).update(emailed_at=None)
        return 0
    return sent


# --- acknowledgement ------------------------------------------------------------------------
def alert_acknowledge(*, alert: Alert | int, user) -> Alert:
    """Record who acknowledged the alert and when. The message leaves the Warning status when its
    last open alert is acknowledged."""
    require_monitor(user=user)
    pk = getattr(alert, "pk", alert)
    now = timezone.now()
    with transaction.atomic():
        a = (
            Alert.objects.select_for_update(of=("self",))
            .select_related("acknowledged_by", "delivery")
            .filter(pk=pk)
            .first()
        )
        if a is None:
            raise DispatchError(_("This alert no longer exists: reload the page."), code="not_found", status=404)
        if a.acknowledged_at is not None:
            raise DispatchError(
                _("This alert was already acknowledged by %(who)s at %(when)s.")
                % {"who": who(a.acknowledged_by), "when": _when(a.acknowledged_at)},
                code="already_acknowledged",
            )
        a.acknowledged_at, a.acknowledged_by = now, user
        a.save(update_fields=["acknowledged_at", "acknowledged_by"])
        if not Alert.objects.filter(delivery_id=a.delivery_id, acknowledged_at__isnull=True).exists():
            delivery_alert_flag_set(delivery_id=a.delivery_id, open_alert=False)
    return a


# --- hourly counter of messages processed -------------------------------------------------------
def processed_hours_record(*, now: datetime | None = None) -> int:
    """Every minute: add what each send processed since the last sample (its delivered + bounces
    counters) to the current hour's row. Reads the few deliveries sending now or finished in the last
    day, never the sending logs. Returns the number of rows written."""
    now = now or timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    live = {
        pk: sent + failed
        for pk, sent, failed in Delivery.objects.filter(state__in=(*SENDING_STATES, *CHECK_STATES_DONE))
        .exclude(started_at__isnull=True)
        .exclude(finished_at__lt=now - timedelta(days=1))
        .values_list("pk", "sent_count", "failed_count")
    }
    if not live:
        return 0
    before = dict(
        ProcessedHour.objects.filter(delivery_id__in=live, hour__lt=hour)
        .values("delivery_id")
        .annotate(m=Max("total"))
        .values_list("delivery_id", "m")
    )
    current = dict(ProcessedHour.objects.filter(delivery_id__in=live, hour=hour).values_list("delivery_id", "total"))
    rows = []
    for pk, total in live.items():
        if current.get(pk) == total or (pk not in current and before.get(pk, 0) == total):
            continue  # nothing new since the last sample
        rows.append(ProcessedHour(delivery_id=pk, hour=hour, processed=max(total - before.get(pk, 0), 0), total=total))
    if rows:
        ProcessedHour.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["delivery", "hour"], update_fields=["processed", "total"]
        )
    return len(rows)


def processed_hours_backfill(*, delivery_ids: list[int] | None = None) -> int:
    """Rebuild the hourly rows from the sending logs (one GROUP BY): for an install that starts
    using ops with sends already done, the demo data and the benchmark. Not used by any page."""
    from django.db.models import Count
    from django.db.models.functions import Trunc

    from deliveries.models import SendingStatus

    logs = SendingLog.objects.filter(status__in=[SendingStatus.SENT, SendingStatus.FAILED], event_at__isnull=False)
    if delivery_ids is not None:
        logs = logs.filter(delivery_id__in=delivery_ids)
    grouped = (
        logs.annotate(h=Trunc("event_at", "hour"))
        .values_list("delivery_id", "h")
        .annotate(n=Count("id"))
        .order_by("delivery_id", "h")
    )
    rows, running, last = [], 0, None
    for delivery_id, h, n in grouped.iterator():
        if delivery_id != last:
            running, last = 0, delivery_id
        running += n
        rows.append(ProcessedHour(delivery_id=delivery_id, hour=h, processed=n, total=running))
    with transaction.atomic():
        old = (
            ProcessedHour.objects.all()
            if delivery_ids is None
            else ProcessedHour.objects.filter(delivery_id__in=delivery_ids)
        )
        old.delete()
        ProcessedHour.objects.bulk_create(rows, batch_size=5000)
    return len(rows)
