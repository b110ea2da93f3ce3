"""Demo tracking: opens, clicks, a few opt-outs and some scanner traffic on the demo's sent messages.

Only the messages the demo made in this run (`command.demo_deliveries`), never a user's own; a
message that already has tracking logs is left alone. No hit is dated after now. Deterministic
(seeded by the message id) and bulk: one INSERT batch per message and one UPDATE per first-time column.
"""

import random
from datetime import timedelta

from django.db import transaction
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone

from deliveries.models import Delivery, SendingLog, SendingStatus, TrackedUrl

from .models import TrackingLog

K = TrackingLog.Kind
MAX_LOGS_PER_MESSAGE = 20_000
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
BROWSERS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
]


def _rows_for(delivery: Delivery, now) -> list[TrackingLog]:
    rnd = random.Random(delivery.pk)
    links = list(TrackedUrl.objects.filter(delivery=delivery, kind=TrackedUrl.Kind.CLICK).values_list("id", flat=True))
    special = dict(TrackedUrl.objects.filter(delivery=delivery).exclude(kind=TrackedUrl.Kind.CLICK).values_list("kind", "id"))
    logs = SendingLog.objects.filter(delivery=delivery, status=SendingStatus.SENT, event_at__isnull=False).values_list("id", "event_at")
    rows = []
    for log_id, sent_at in logs[:MAX_LOGS_PER_MESSAGE]:
        def add(kind, minutes, url=None, ua=None, machine="", log_id=log_id, sent_at=sent_at):
            if sent_at + timedelta(minutes=minutes) > now:  # not happened yet
                return
            rows.append(
                TrackingLog(
                    at=sent_at + timedelta(minutes=minutes), delivery_id=delivery.pk, sending_log_id=log_id, kind=kind,
                    tracked_url_id=url, user_agent=ua or rnd.choice(BROWSERS), ip_hash=f"{rnd.getrandbits(64):016x}",
                    is_machine=bool(machine), machine_reason=machine,
                )
            )  # fmt: skip

        if rnd.random() < 0.05:  # a corporate gateway scans the message on arrival
            add(K.OPEN, 0.01, ua=SCANNER, machine="Known scanner: Barracuda Link Protection")
            for url in links[:3]:
                add(K.CLICK, 0.01, url=url, ua=SCANNER, machine="Known scanner: Barracuda Link Protection")
        if rnd.random() < 0.42:
            first = rnd.uniform(2, 600)
            add(K.OPEN, first)
            if rnd.random() < 0.3:
                add(K.OPEN, first + rnd.uniform(60, 3000))
            if links and rnd.random() < 0.28:
                add(K.CLICK, first + rnd.uniform(0.2, 5), url=rnd.choice(links))
            if rnd.random() < 0.04:
                add(K.MIRROR, first + rnd.uniform(0.1, 2), url=special.get(TrackedUrl.Kind.MIRROR))
            if rnd.random() < 0.02:
                add(K.OPTOUT, first + rnd.uniform(1, 10), url=special.get(TrackedUrl.Kind.OPTOUT))
    return rows


def seed(command) -> None:
    demo = getattr(command, "demo_deliveries", None) or []
    sent = (
        Delivery.objects.filter(pk__in=demo, sending_logs__status=SendingStatus.SENT)
        .exclude(tracking_logs__isnull=False)
        .distinct()
    )
    now = timezone.now()
    for delivery in sent:
        rows = _rows_for(delivery, now)
        if not rows:
            continue
        with transaction.atomic():
            TrackingLog.objects.bulk_create(rows, batch_size=5000)
            humans = TrackingLog.objects.filter(sending_log_id=OuterRef("pk"), is_machine=False).order_by().values("sending_log_id")
            SendingLog.objects.filter(delivery=delivery).update(
                first_open_at=Subquery(humans.annotate(first=Min("at")).values("first")[:1]),
                first_click_at=Subquery(humans.filter(kind=K.CLICK).annotate(first=Min("at")).values("first")[:1]),
            )
        optouts = TrackingLog.objects.filter(delivery=delivery, kind=K.OPTOUT).values("sending_log__profile_id")
        from audiences.models import Profile

        Profile.objects.filter(pk__in=optouts).update(email_denylisted=True)
        if getattr(command, "stdout", None) is not None:
            command.stdout.write(f"  tracking: {len(rows)} tracking logs for {delivery}")
