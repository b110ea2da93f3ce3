"""Writes of the tracking app: what recipients (or machines acting for them) did, and provider events.

Every hit (an open, a click, a mirror-page view, a provider's open or click event) is judged by
the one machine-traffic rule (tracking/machine.py) and written by one writer per database:

- `hit_write`, one hit at a time (the pixel and the click redirect when hits are not buffered,
  the mirror page, provider events): on PostgreSQL ONE statement (a data-modifying CTE: read the
  sending log, apply the rule, insert the tracking log and, the first time a person opens or
  clicks, set the log's first open / first click time with a conditional UPDATE), committed
  without waiting for the WAL flush (TRACKING_ASYNC_COMMIT); elsewhere (SQLite) a read, an INSERT
  and, the first time, an UPDATE. A click on a plain link on PostgreSQL is the same statement with
  the link and the recent clicks of the burst rule read in it (one round trip, the URL returned).
- `tracking/buffer.py`, many hits at once (PostgreSQL's WSGI fast path): the same rule and the
  same first times, set-based.

Plain SQL through Django's connection keeps the per-hit cost low (building ORM queries costs more
than running these). A click, a mirror-page view and an opt-out also count as an open (DOMAIN.md
§4): they set the first open time when it is not set yet. Machine hits never set the first times.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from audiences.failures import COMPLAINT, FailureReason, FailureType
from audiences.models import Channel, Profile
from audiences.services import profile_denylist_set, quarantine_record_failure
from deliveries.channels.classify import classify
from deliveries.models import SendingLog, TrackedUrl
from deliveries.personalization import TEXT_ENV, profile_context
from deliveries.services import sending_log_bounce
from deliveries.tokens import PIXEL, BadToken, read_purpose_token, read_token

from .machine import agent_reason, burst_reason, machine_reason, reason_sql, rule_params
from .models import ProviderEvent, TrackingLog

logger = logging.getLogger(__name__)

K = TrackingLog.Kind
_LOG = SendingLog._meta.db_table
_URL = TrackedUrl._meta.db_table
_TRK = TrackingLog._meta.db_table
_INSERT = (
    f"INSERT INTO {_TRK} (at, delivery_id, sending_log_id, kind, tracked_url_id, user_agent, ip_hash, is_machine, machine_reason) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
UA_MAX = 500


@dataclass(frozen=True)
class Hit:
    """What the request tells about the visitor (user agent, IP)."""

    user_agent: str = ""
    ip: str = ""

    @property
    def ua(self) -> str:
        return (self.user_agent or "").replace("\x00", "")[:UA_MAX]  # PostgreSQL text holds no NUL

    @property
    def ip_hash(self) -> str:
        return ip_hash(self.ip)


@lru_cache(maxsize=1)
def _ip_key() -> bytes:
    return hashlib.sha256(b"dispatch.tracking.ip:" + settings.SECRET_KEY.encode()).digest()


def ip_hash(ip: str) -> str:
    """A keyed hash of the IP: the same visitor can be recognized, the address is not kept."""
    if not ip:
        return ""
    return hashlib.blake2b(ip.encode(), key=_ip_key()[:32], digest_size=16).hexdigest()


def _aware(value):
    """A datetime read by raw SQL (SQLite gives naive UTC datetimes or strings)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


def _set_first_times(cursor, log_id: int, at: datetime, *, click: bool) -> None:
    """Set the first human open (and click) time once: a conditional UPDATE, so concurrent hits agree."""
    if click:
        cursor.execute(
            f"UPDATE {_LOG} SET first_open_at = COALESCE(first_open_at, %s), first_click_at = COALESCE(first_click_at, %s) "
            "WHERE id = %s AND (first_open_at IS NULL OR first_click_at IS NULL)",
            [at, at, log_id],
        )
    else:
        cursor.execute(f"UPDATE {_LOG} SET first_open_at = %s WHERE id = %s AND first_open_at IS NULL", [at, log_id])


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _commit_mode() -> str:
    # PostgreSQL: a tracking hit may skip waiting for its WAL flush (synchronous_commit off for
    # that transaction only): a database crash can lose the last fraction of a second of hits,
    # never corrupt anything. TRACKING_ASYNC_COMMIT=0 keeps every hit durable before answering.
    return "off" if getattr(settings, "TRACKING_ASYNC_COMMIT", True) else "on"


# --- the writer of one hit ----------------------------------------------------------------------
_HIT_PG = f"""
WITH l AS (
    SELECT id, delivery_id, set_config('synchronous_commit', %(commit_mode)s, true) AS commit_mode,
           {reason_sql(agent="%(agent_reason)s", event_at="event_at", status="status", at="%(at)s", burst="%(burst)s")} AS reason
    FROM {_LOG} WHERE id = %(log_id)s
), ins AS (
    INSERT INTO {_TRK} (at, delivery_id, sending_log_id, kind, tracked_url_id, user_agent, ip_hash, is_machine, machine_reason)
    SELECT %(at)s, delivery_id, id, %(kind)s, %(url_id)s, %(ua)s, %(ip_hash)s, reason <> '', reason FROM l
)
UPDATE {_LOG} AS s SET first_open_at = COALESCE(s.first_open_at, %(at)s),
       first_click_at = CASE WHEN %(click)s THEN COALESCE(s.first_click_at, %(at)s) ELSE s.first_click_at END
FROM l WHERE s.id = l.id AND l.reason = '' AND (s.first_open_at IS NULL OR (%(click)s AND s.first_click_at IS NULL))
"""


@dataclass(frozen=True)
class LogFacts:
    """What the writer reads of a sending log, when the caller has read it already."""

    delivery_id: int
    event_at: datetime | None
    status: str
    first_open_at: datetime | None
    first_click_at: datetime | None


def hit_write(cursor, *, log_id: int, kind: str, at: datetime, hit: Hit, url_id: int | None = None, burst: bool = False,
              facts: LogFacts | None = None, durable: bool = False) -> bool:  # fmt: skip
    """Write one hit: its tracking log, judged by the machine-traffic rule (`burst`: the click is
    part of a burst of clicks), and, for a person's first open (a click is one too) or click, the
    sending log's first times. PostgreSQL: one statement, which reads the log itself (`durable`
    waits for the WAL flush whatever TRACKING_ASYNC_COMMIT says). Elsewhere: a read (none when the
    caller gives the log's `facts`), an INSERT and, the first time, an UPDATE. False when the
    sending log does not exist (read here; on PostgreSQL nothing is written then, and True is said)."""
    click = kind == K.CLICK
    if _postgres():
        cursor.execute(
            _HIT_PG,
            {
                **rule_params(),
                "commit_mode": "on" if durable else _commit_mode(),
                "agent_reason": agent_reason_cached(hit.ua),
                "burst": burst,
                "log_id": log_id,
                "at": at,
                "kind": kind,
                "url_id": url_id,
                "ua": hit.ua,
                "ip_hash": hit.ip_hash,
                "click": click,
            },
        )
        return True
    if facts is None:
        cursor.execute(f"SELECT delivery_id, event_at, status, first_open_at, first_click_at FROM {_LOG} WHERE id = %s", [log_id])
        row = cursor.fetchone()
        if row is None:
            return False
        facts = LogFacts(*row)
    reason = machine_reason(user_agent=hit.ua, at=at, delivered_at=_aware(facts.event_at), status=facts.status, burst=burst)
    cursor.execute(_INSERT, [at, facts.delivery_id, log_id, kind, url_id, hit.ua, hit.ip_hash, bool(reason), reason])
    if not reason and (facts.first_open_at is None or (click and facts.first_click_at is None)):
        _set_first_times(cursor, log_id, at, click=click)
    return True


# --- open pixel ---------------------------------------------------------------------------------
def _token_log_id(token: str, purpose: str) -> int | None:
    """The sending log a url-less token names for `purpose` (pixel, unsubscribe, mirror page);
    None when the token is bad, names a link or was made for another purpose."""
    try:
        return read_purpose_token(token, purpose)
    except BadToken:
        return None


def tracking_open(*, token: str, hit: Hit) -> bool:
    """Record an open for the token's sending log; False (and nothing written) for a bad token.

    PostgreSQL: one statement reads the log, applies the rule, inserts the tracking log and sets
    the first open time (hit_write); elsewhere the same in two or three statements.
    """
    log_id = _token_log_id(token, PIXEL)
    if log_id is None:
        return False
    with connection.cursor() as cursor:
        return hit_write(cursor, log_id=log_id, kind=K.OPEN, at=timezone.now(), hit=hit)


# --- click redirect -----------------------------------------------------------------------------
def _render_url(template_url: str, profile_id: int | None) -> str | None:
    """Render a personalized link for its recipient; None when it is refused (see tracking_click)."""
    profile = Profile.objects.filter(pk=profile_id).first() if profile_id else None
    try:
        rendered = TEXT_ENV.from_string(template_url).render(profile_context(profile) if profile else {}).strip()
    except Exception:  # a template error at click time: refuse rather than guess
        logger.warning("tracked URL template failed to render for profile %s", profile_id, exc_info=True)
        return None
    source, result = urlsplit(template_url.strip()), urlsplit(rendered)
    # Followed only when personalization kept the scheme and the host of the template: a value
    # of the profile cannot send the click elsewhere (no open redirect through profile data).
    if "{" in source.scheme or "{" in source.netloc or not source.scheme or not source.netloc:
        return None
    if (result.scheme.lower(), result.netloc.lower()) != (source.scheme.lower(), source.netloc.lower()):
        return None
    return rendered


_CLICK_READ = (
    f"SELECT u.url, u.is_template, l.delivery_id, l.profile_id, l.event_at, l.status, l.first_open_at, l.first_click_at, "
    f"(SELECT COUNT(DISTINCT t.tracked_url_id) FROM {_TRK} t WHERE t.sending_log_id = l.id AND t.kind = %(click)s "
    "AND t.at >= %(burst_since)s AND t.tracked_url_id <> u.id) AS others "
    f"FROM {_URL} u JOIN {_LOG} l ON l.delivery_id = u.delivery_id "
    "WHERE u.id = %(url_id)s AND l.id = %(log_id)s AND u.kind = %(url_kind)s"
)
# PostgreSQL: read the link and the log, apply the machine rules, insert the click and set the
# first times in one statement; a personalized link is only read here (it is written once its
# rendering is accepted, see tracking_click).
_CLICK_PG = f"""
WITH x AS (
    SELECT r.*, set_config('synchronous_commit', %(commit_mode)s, true) AS commit_mode,
           {reason_sql(agent="%(agent_reason)s", event_at="r.event_at", status="r.status", at="%(at)s", burst="r.others + 1 >= %(burst_links)s")} AS reason
    FROM ({_CLICK_READ}) AS r
), ins AS (
    INSERT INTO {_TRK} (at, delivery_id, sending_log_id, kind, tracked_url_id, user_agent, ip_hash, is_machine, machine_reason)
    SELECT %(at)s, delivery_id, %(log_id)s, %(click)s, %(url_id)s, %(ua)s, %(ip_hash)s, reason <> '', reason FROM x WHERE NOT is_template
), upd AS (
    UPDATE {_LOG} AS s SET first_open_at = COALESCE(s.first_open_at, %(at)s), first_click_at = COALESCE(s.first_click_at, %(at)s)
    FROM x WHERE s.id = %(log_id)s AND NOT x.is_template AND x.reason = '' AND (s.first_open_at IS NULL OR s.first_click_at IS NULL)
)
SELECT url, is_template, delivery_id, profile_id, event_at, status, first_open_at, first_click_at, others FROM x
"""


def tracking_click(*, token: str, hit: Hit, record: bool = True) -> str | None:
    """Record a click and return the URL to redirect to, or None (nothing written) when the token
    is bad, unknown, not a link of the log's message, or its personalized URL is refused.
    With `record=False` (a HEAD request: link checkers) the URL is only resolved.

    PostgreSQL: one statement for a plain link; a personalized link costs one more (its click is
    written only after its rendering is accepted). Elsewhere: a read, then the writes.
    """
    try:
        log_id, url_id = read_token(token)
    except BadToken:
        return None
    if url_id is None:
        return None
    at = timezone.now()
    since = at - timedelta(seconds=settings.TRACKING_BURST_SECONDS)
    params = {"click": K.CLICK, "url_kind": TrackedUrl.Kind.CLICK, "burst_since": since, "url_id": url_id, "log_id": log_id}
    postgres = _postgres()
    with connection.cursor() as cursor:
        if postgres and record:
            params.update(
                **rule_params(), commit_mode=_commit_mode(), agent_reason=agent_reason_cached(hit.ua),
                burst_links=settings.TRACKING_BURST_LINKS, at=at, ua=hit.ua, ip_hash=hit.ip_hash,
            )  # fmt: skip
            cursor.execute(_CLICK_PG, params)
        else:
            cursor.execute(_CLICK_READ, params)
        row = cursor.fetchone()
        if row is None:
            return None
        url, is_template, delivery_id, profile_id, event_at, status, first_open_at, first_click_at, others = row
        burst = others + 1 >= settings.TRACKING_BURST_LINKS
        if is_template:
            url = _render_url(url, profile_id)
            if url is None:
                return None
        if not record:
            return url
        if is_template or not postgres:  # written once its rendering is accepted (PostgreSQL), or the portable path
            hit_write(
                cursor, log_id=log_id, kind=K.CLICK, at=at, hit=hit, url_id=url_id, burst=burst,
                facts=LogFacts(delivery_id, event_at, status, first_open_at, first_click_at),
            )  # fmt: skip
        if burst:
            _flag_burst(log_id=log_id, since=since, reason=burst_reason())
    return url


# --- buffered hits (the WSGI fast path on PostgreSQL, tracking/buffer.py) ------------------------
@dataclass(frozen=True)
class Link:
    url: str
    is_template: bool
    kind: str
    delivery_id: int


_LINK_TTL = 60.0  # seconds a tracked URL is remembered by a process (a deleted message's links 404 after it)
_links: dict[int, tuple[Link | None, float]] = {}


def tracked_link(url_id: int) -> tuple[Link | None, bool]:
    """(A tracked URL, whether the database was read for it), remembered by the process for a
    minute: the rows never change (preparation replaces them with new ids), so a click on a known
    link reads nothing from the database."""
    now = time.monotonic()
    cached = _links.get(url_id)
    if cached is not None and cached[1] > now:
        return cached[0], False
    row = TrackedUrl.objects.filter(pk=url_id).values_list("url", "is_template", "kind", "delivery_id").first()
    if len(_links) >= 10_000:
        _links.clear()
    link = Link(*row) if row else None
    _links[url_id] = (link, now + _LINK_TTL)
    return link, True


@lru_cache(maxsize=4096)
def agent_reason_cached(user_agent: str) -> str:
    """agent_reason, remembered for the user agents seen most (a few browsers send most hits)."""
    return agent_reason(user_agent)


def tracking_open_later(*, token: str, user_agent: str, ip: str, buffer) -> bool:
    """Note an open for `buffer` to write (tracking/buffer.py); False for a bad token. The request
    only checks the token: the rest (time, IP hash, machine rules) is worked out by the buffer's
    thread, a batch at a time. A token of an unknown sending log is found out when the buffer is
    written, which then writes nothing for it."""
    log_id = _token_log_id(token, PIXEL)
    if log_id is None:
        return False
    buffer.add((time.time(), log_id, K.OPEN, None, None, user_agent, ip))
    return True


def tracking_click_later(*, token: str, user_agent: str, ip: str, buffer) -> tuple[str | None, bool]:
    """(URL to redirect to, whether the database was used), the click noted for `buffer` to write.
    The URL is None (nothing noted) when the token is bad or its link unknown. A personalized link
    is rendered for its recipient and written at once (tracking_click: it needs the profile anyway);
    a link this process knows costs no query."""
    try:
        log_id, url_id = read_token(token)
    except BadToken:
        return None, False
    if url_id is None:
        return None, False
    link, queried = tracked_link(url_id)
    if link is None or link.kind != TrackedUrl.Kind.CLICK:
        return None, queried
    if link.is_template:
        return tracking_click(token=token, hit=Hit(user_agent=user_agent, ip=ip)), True
    buffer.add((time.time(), log_id, K.CLICK, url_id, link.delivery_id, user_agent, ip))
    return link.url, queried


def is_safe_target(url: str) -> bool:
    """Only absolute http(s) URLs are redirected to (preparation tracks nothing else)."""
    return urlsplit(url).scheme.lower() in ("http", "https")


def first_times_recompute(*, log_ids: list[int]) -> None:
    """Set the logs' first human open and click times from their tracking logs (one UPDATE)."""
    humans = TrackingLog.objects.filter(sending_log_id=OuterRef("pk"), is_machine=False).order_by().values("sending_log_id")
    SendingLog.objects.filter(pk__in=log_ids).update(
        first_open_at=Subquery(humans.annotate(first=Min("at")).values("first")[:1]),
        first_click_at=Subquery(humans.filter(kind=K.CLICK).annotate(first=Min("at")).values("first")[:1]),
    )


def _flag_burst(*, log_id: int, since: datetime, reason: str) -> None:
    """A burst of clicks was a machine: flag the burst's earlier clicks too and recompute the
    log's first human times from what is left (rare path, a few statements)."""
    TrackingLog.objects.filter(sending_log_id=log_id, kind=K.CLICK, at__gte=since, is_machine=False).update(
        is_machine=True, machine_reason=reason
    )
    first_times_recompute(log_ids=[log_id])


# --- mirror page and unsubscribe ----------------------------------------------------------------
def sending_log_for_token(*, token: str, purpose: str) -> SendingLog | None:
    """The sending log a url-less token names for `purpose` (UNSUBSCRIBE, MIRROR), with its
    delivery and profile; None when bad, unknown or made for another purpose."""
    log_id = _token_log_id(token, purpose)
    if log_id is None:
        return None
    return SendingLog.objects.select_related("delivery", "profile").filter(pk=log_id).first()


def _placeholder_url_id(*, delivery_id: int, kind: str) -> int | None:
    """The message's opt-out or mirror-page tracked URL (its `{{ unsubscribe_url }}` / `{{ mirror_url }}`
    link), so these events count on that row like clicks on a link; None when the content has none."""
    return TrackedUrl.objects.filter(delivery_id=delivery_id, kind=kind).order_by("id").values_list("id", flat=True).first()


def tracking_mirror_view(*, log: SendingLog, hit: Hit) -> None:
    """Record a mirror-page view (counts as an open for a person)."""
    url_id = _placeholder_url_id(delivery_id=log.delivery_id, kind=TrackedUrl.Kind.MIRROR)
    with connection.cursor() as cursor:
        hit_write(cursor, log_id=log.pk, kind=K.MIRROR, at=timezone.now(), hit=hit, url_id=url_id, facts=_facts(log))


def _facts(log: SendingLog) -> LogFacts:
    return LogFacts(log.delivery_id, log.event_at, log.status, log.first_open_at, log.first_click_at)


def tracking_optout(*, log: SendingLog, hit: Hit) -> bool:
    """Opt the recipient out: set the profile's email denylist flag and record one opt-out (an
    open too). Repeating it changes nothing. Returns True the first time.

    Not subject to the machine rules: a one-click unsubscribe (RFC 8058) is posted by the mailbox
    provider on the person's behalf, and it is the person's decision.
    """
    at = timezone.now()
    with transaction.atomic():
        # The profile's flag (the profile, not the address: DOMAIN.md §5).
        if log.profile_id:
            profile_denylist_set(profile_id=log.profile_id, channel=Channel.EMAIL, at=at)
        # Lock the sending log so two opt-outs arriving together (the page and the one-click POST)
        # record one opt-out.
        SendingLog.objects.select_for_update().filter(pk=log.pk).values_list("pk", flat=True).first()
        if TrackingLog.objects.filter(sending_log_id=log.pk, kind=K.OPTOUT).exists():
            return False
        TrackingLog.objects.create(
            at=at, delivery_id=log.delivery_id, sending_log_id=log.pk, kind=K.OPTOUT, user_agent=hit.ua, ip_hash=hit.ip_hash,
            tracked_url_id=_placeholder_url_id(delivery_id=log.delivery_id, kind=TrackedUrl.Kind.OPTOUT),
        )  # fmt: skip
        SendingLog.objects.filter(pk=log.pk, first_open_at__isnull=True).update(first_open_at=at)
    return True


# --- provider events (django-anymail) -----------------------------------------------------------
HANDLED = {"delivered", "bounced", "rejected", "deferred", "complained", "unsubscribed", "opened", "clicked"}


def provider_log_id(*, metadata: dict | None, headers: dict | None = None) -> int | None:
    """Our sending log id, carried by the message's metadata (or its X-Dispatch-Log header)."""
    for source in (metadata or {}, headers or {}):
        for key, value in source.items():
            if str(key).lower() in ("dispatch_log", "x-dispatch-log"):
                try:
                    return int(str(value).strip())
                except ValueError:
                    return None
    return None


SOFT_ESP_TYPES = {"softbounce", "transient", "dnserror"}  # Postmark bounce types that are temporary


def classify_bounce(*, esp_type: str, reject_reason: str | None, mta_response: str | None, description: str | None, code: int | None = None) -> tuple[str, str]:
    """(failure_type, failure_reason) of an asynchronous bounce, classified like an SMTP refusal
    (deliveries.channels.classify: DOMAIN.md §5, RFC 3463) from the provider's reply code and text."""
    text = " ".join(filter(None, [mta_response, description]))
    soft = esp_type.lower() in SOFT_ESP_TYPES
    if not code:
        m = re.search(r"\b([45]\d\d)\b", mta_response or "")
        code = int(m.group(1)) if m else (450 if soft else 550)
    ftype, reason = classify(code, text)
    if reject_reason == "invalid" and reason == FailureReason.NOT_DEFINED:
        reason = FailureReason.USER_UNKNOWN
    elif reject_reason in ("spam", "blocked") and reason == FailureReason.NOT_DEFINED:
        reason = FailureReason.REFUSED
    if soft:
        ftype = FailureType.SOFT
    return ftype, reason


def _bounce(*, esp: str, log: SendingLog, event, at: datetime) -> None:
    esp_event = event.esp_event if isinstance(event.esp_event, dict) else {}
    status = (esp_event.get("event-data", {}) or {}).get("delivery-status", {}) or {}  # Mailgun
    ftype, reason = classify_bounce(
        esp_type=str(esp_event.get("Type", "")),  # Postmark
        reject_reason=event.reject_reason,
        mta_response=event.mta_response,
        description=event.description,
        code=status.get("code") if isinstance(status.get("code"), int) else None,
    )
    text = (event.mta_response or event.description or "").strip()[:2000]
    # Only a sent log turns failed (deliveries moves its counters and journals it); a log already failed stays as it is.
    sending_log_bounce(log=log, failure_type=ftype, failure_reason=reason, text=text, at=at, reported_by=esp)
    quarantine_record_failure(address=log.address, channel=Channel.EMAIL, failure_type=ftype, reason=reason, text=text, at=at)


def provider_event_record(*, esp: str, event) -> str:
    """Apply one anymail tracking event; returns what happened ("ignored", "duplicate", "applied").

    A repeated event (same provider event id, or same log, type and time when the provider sends
    no id) changes nothing.
    """
    event_type = str(event.event_type or "")
    if event_type not in HANDLED:
        return "ignored"
    headers = {}
    if isinstance(event.esp_event, dict):
        headers = (event.esp_event.get("event-data", {}).get("message", {}) or {}).get("headers", {}) or {}
    log_id = provider_log_id(metadata=event.metadata, headers=headers)
    log = SendingLog.objects.filter(pk=log_id).first() if log_id else None
    if log is None:
        logger.info("%s %s event for %s: no Dispatch sending log in its metadata; ignored", esp, event_type, event.recipient)
        return "ignored"
    at = event.timestamp or timezone.now()
    key = str(event.event_id) if event.event_id else f"{log.pk}:{event_type}:{at.isoformat()}"
    with transaction.atomic():
        _event, created = ProviderEvent.objects.get_or_create(
            esp=esp,
            key=key[:255],
            defaults={
                "event_type": event_type,
                "at": at,
                "sending_log": log,
                "recipient": (event.recipient or "")[:254],
                "description": (event.description or event.mta_response or "")[:2000],
            },
        )
        if not created:
            return "duplicate"
        hit = Hit(user_agent=getattr(event, "user_agent", "") or "")
        if event_type in ("bounced", "rejected"):
            _bounce(esp=esp, log=log, event=event, at=at)
        elif event_type == "complained":
            quarantine_record_failure(
                address=log.address, channel=Channel.EMAIL, failure_type=COMPLAINT, reason=FailureReason.REFUSED,
                text=_("Spam complaint"), at=at,
            )  # fmt: skip
        elif event_type == "unsubscribed":
            tracking_optout(log=log, hit=hit)
        elif event_type in ("opened", "clicked"):  # the same rule and writer as the pixel's and the link's
            with connection.cursor() as cursor:
                hit_write(cursor, log_id=log.pk, kind=K.OPEN if event_type == "opened" else K.CLICK, at=at, hit=hit,
                          facts=_facts(log), durable=True)  # fmt: skip
        # delivered and deferred: the log is already sent (the relay accepted it); nothing to change.
    return "applied"


def provider_events_purge(*, now: datetime | None = None) -> int:
    """Delete provider events older than PROVIDER_EVENT_RETENTION_DAYS (one statement); returns the count.

    Providers repeat an undelivered webhook for hours, not weeks: past the retention a repeat is
    not expected, and what the event changed (log status, quarantine, journal) stays."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PROVIDER_EVENT_RETENTION_DAYS)
    deleted, _by_model = ProviderEvent.objects.filter(received_at__lt=cutoff).delete()
    return deleted
