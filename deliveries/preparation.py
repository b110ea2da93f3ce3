"""Preparation (DOMAIN.md §1.2): target, exclusions, personalization check, sending logs.

Sends nothing. The phases:

1. **Content**: subject, sender, templates compiled; tracked links stored.
2. **Target**: the audience's profiles, counted with their id bounds (one query), then taken a
   range of ids at a time (`PREPARATION_CHUNK` profiles per statement); the stop flag is read and
   the progress written between ranges.
3. **Exclusions** (DOMAIN.md §5, in this order): address not specified, invalid address syntax,
   denylist (the profile's flag or the address On denylist), quarantine, duplicate (same address
   compared case-insensitively; the lowest profile id is kept), excluded domain. On PostgreSQL one
   statement per range judges every profile in SQL and writes its sending log or its exclusion log
   (`INSERT … SELECT` from a data-modifying CTE); the address syntax is checked by a regular
   expression equal to `audiences.emails` for ASCII addresses whose domain has at most 63
   characters, and the few others (non-ASCII, longer domains) are handed back and judged in Python.
   Duplicates need no sort of the target: `email_key` is unique, so only addresses of profiles
   without one (written around the services) can repeat; those few are judged first.
4. **Personalization check** (`render_classes`): the same statement groups the recipients by what
   of their data the template reads can change its outcome, and returns one profile per group with
   the group's size; that profile is rendered and counted that many times.
5. **Logs and journal**: counts per cause, warnings, errors, the state.

Elsewhere (SQLite) the same phases run in Python over the target read in id order (slower, same
results: `tests/deliveries/test_preparation_paths.py` compares the two on PostgreSQL).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count as CountAgg
from django.db.models import Max, Min
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from audiences.emails import is_valid_email
from audiences.models import Profile, Quarantine
from audiences.selectors import audience_profiles, quarantine_status_of

from .links import tracked_urls_sync
from .models import Delivery, ExclusionCause, ExclusionLog, JournalEntry, SendingLog, SendingStatus, State
from .personalization import TemplateLimitError, check_template, compile_content, profile_context, render_with_missing
from .render_classes import WHITESPACE, Classes, classes_of
from .waves import due_times_compute

log = logging.getLogger(__name__)

# What the links look like while checking personalization (the real ones are made per recipient).
CHECK_LINKS = {"unsubscribe_url": "https://check/u", "mirror_url": "https://check/m"}

SENDING_LOG_COLUMNS = (
    "delivery_id", "profile_id", "address", "status", "failure_type", "failure_reason", "failure_text", "attempts", "message_id",
)  # fmt: skip
EXCLUSION_LOG_COLUMNS = ("delivery_id", "profile_id", "address", "cause")
PORTABLE_BATCH = 5000  # rows per bulk insert on the portable path

# `audiences.emails._ASCII_EMAIL_RE` for a domain of at most 63 characters: no label, and no
# top-level label, can then reach the bounds of {0,61}, {2,63} or {1,59}, which PostgreSQL's
# regular expressions pay for dearly (5.4 s against 0.6 s for a million addresses here).
_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
ASCII_EMAIL_SQL_RE = (
    rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+(?:[A-Za-z][A-Za-z]+|xn--[A-Za-z0-9-]+)$"
)
UNSURE = "unsure"  # a row whose address the SQL leaves to Python
ASCII_WHITESPACE = "".join(c for c in WHITESPACE if c.isascii())


def _journal(delivery_id: int, text: str, level: str = JournalEntry.Level.INFO) -> None:
    JournalEntry.objects.create(delivery_id=delivery_id, text=text, level=level)


def _sentence(text: str) -> str:
    text = str(text).rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def excluded_domains() -> set[str]:
    return {d.strip().lower() for d in getattr(settings, "EXCLUDED_DOMAINS", []) if d.strip()}


def insert_rows(model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert many rows in one statement: COPY on PostgreSQL, a bulk INSERT elsewhere."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    model.objects.bulk_create([model(**dict(zip(columns, row, strict=True))) for row in rows], batch_size=2000)


def _delete_logs(delivery_id: int) -> None:
    """Drop a preparation's logs. Set-based (no object is loaded): a message being prepared was never
    sent, so nothing refers to its sending logs (tracking logs come with a send)."""
    with connection.cursor() as cursor:
        for model in (ExclusionLog, SendingLog):
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE delivery_id = %s", [delivery_id])


# --- exclusions (DOMAIN.md §5) ------------------------------------------------------------------------
def exclusion_cause(*, email: str, key: str, denylisted: bool, q_status, duplicate: bool, domains: set[str]) -> str | None:
    """The first exclusion cause of one profile, in DOMAIN.md's order; None when it is sent."""
    if not email:
        return ExclusionCause.NO_ADDRESS
    if not is_valid_email(email):
        return ExclusionCause.INVALID_SYNTAX
    if denylisted or q_status == Quarantine.Status.DENYLIST:
        return ExclusionCause.DENYLIST
    if q_status == Quarantine.Status.QUARANTINE:
        return ExclusionCause.QUARANTINE
    if duplicate:
        return ExclusionCause.DUPLICATE
    if key.rpartition("@")[2] in domains:
        return ExclusionCause.EXCLUDED_DOMAIN
    return None


def address_key(email_key, email) -> str:
    """The case-insensitive key an address is compared by (the stored one, else the address's)."""
    return email_key or (email or "").strip().lower()


def duplicate_ids(*, audience, channel: str, domains: set[str]) -> set[int]:
    """The profiles of the target excluded as duplicates (a later profile of an address already sent).

    `Profile.email_key` is unique, so two profiles of the target can share an address only when
    one of them has no `email_key` (a row written around the services): only the addresses of such
    profiles can repeat. Their profiles are judged here, in id order, by the rules that come before
    Duplicate; the first sendable one of each address is kept. Usually nothing to read."""
    target = audience_profiles(audience=audience).order_by()
    keys = {address_key(None, e) for e in target.filter(email_key__isnull=True).exclude(email="").values_list("email", flat=True).iterator()}
    keys.discard("")
    if not keys:
        return set()
    statuses = quarantine_status_of(addresses=keys, channel=channel)
    seen: set[str] = set()
    duplicates: set[int] = set()
    key_list = sorted(keys)
    candidates = []
    for start in range(0, len(key_list), 5000):
        part = key_list[start : start + 5000]
        candidates += target.filter(email_key__in=part).values_list("id", "email", "email_key", "email_denylisted")
    candidates += target.filter(email_key__isnull=True).exclude(email="").values_list("id", "email", "email_key", "email_denylisted")
    for pid, email, email_key, denylisted in sorted(set(candidates)):
        key = address_key(email_key, email)
        if key not in keys:
            continue
        cause = exclusion_cause(email=email, key=key, denylisted=denylisted, q_status=statuses.get(key), duplicate=False, domains=set())
        if cause is not None:
            continue
        if key in seen:
            duplicates.add(pid)
        elif key.rpartition("@")[2] not in domains:
            seen.add(key)
    return duplicates


# --- personalization check ----------------------------------------------------------------------------
@dataclass
class Checker:
    """Renders one profile per class (`render_classes`) and counts its outcome for the whole class."""

    template: object
    classes: Classes
    missing: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    renders: int = 0
    guard: object = None  # called at most every STOP_CHECK_SECONDS while rendering: raises to stop
    refused: bool = False  # the sandbox refused a render (too slow, too big, unsafe): no more renders
    next_guard: float = 0.0

    @classmethod
    def for_content(cls, *, subject: str, html: str, text: str) -> Checker:
        # What each recipient's copy evaluates, in one template: the subject, the HTML and an explicit
        # text part (a derived text evaluates what the HTML does).
        source = "\n".join(part for part in (subject, html, text) if part)
        return cls(template=check_template(source, autoescape=False), classes=classes_of(source))

    def add(self, row: dict, count: int) -> None:
        """Count `row`'s outcome `count` times (the size of its class)."""
        if self.refused:
            return
        if self.guard is not None and (now := time.monotonic()) >= self.next_guard:
            self.guard()
            self.next_guard = now + STOP_CHECK_SECONDS
        self.renders += 1
        ctx = profile_context(row) | CHECK_LINKS
        try:
            _out, missing = render_with_missing(self.template, ctx)
        except TemplateLimitError as e:  # too slow, too big or unsafe: one is enough to tell
            self.errors[str(e)] += 1
            self.refused = True
            return
        except Exception as e:  # a template that fails for this profile's data
            self.errors[f"{type(e).__name__}: {e}"] += count
            return
        for name in missing:
            self.missing[name] += count

    def add_rows(self, rows: list[dict]) -> None:
        """Rows read in Python (the portable path): grouped by class here, one render per class."""
        groups: dict[tuple, list] = {}
        for row in rows:
            group = groups.setdefault(self.classes.key(row), [row, 0])
            group[1] += 1
        for row, count in groups.values():
            self.add(row, count)


@dataclass
class Tally:
    targeted: int = 0
    to_deliver: int = 0
    causes: Counter = field(default_factory=Counter)


class _Stopped(Exception):
    pass


class _TooLong(Exception):
    """The preparation ran past PREPARATION_TIME_LIMIT."""


STOP_CHECK_SECONDS = 0.5  # how often a preparation reads its stop flag while personalization is slow


# --- writing the logs of a range of the target -----------------------------------------------------
class Writer:
    """Judges profiles and writes their sending or exclusion logs; feeds the tally and the checker."""

    def __init__(self, *, delivery: Delivery, checker: Checker | None, duplicates: set[int], domains: set[str]):
        self.d = delivery
        self.checker = checker
        self.duplicates = duplicates
        self.domains = domains
        self.tally = Tally()
        self.columns = checker.classes.columns if checker else ["email"]

    def judge_rows(self, rows: list[dict]) -> None:
        """Judge rows in Python (dicts with id, email, email_key, email_denylisted and the class
        columns) and write their logs: the portable path, and the addresses the SQL leaves to Python."""
        if not rows:
            return
        keys = {address_key(r["email_key"], r["email"]) for r in rows} - {""}
        statuses = quarantine_status_of(addresses=keys, channel=self.d.channel) if keys else {}
        logs, exclusions, sent = [], [], []
        for r in rows:
            key = address_key(r["email_key"], r["email"])
            cause = exclusion_cause(
                email=r["email"], key=key, denylisted=r["email_denylisted"], q_status=statuses.get(key),
                duplicate=r["id"] in self.duplicates, domains=self.domains,
            )  # fmt: skip
            if cause:
                self.tally.causes[cause] += 1
                exclusions.append((self.d.pk, r["id"], r["email"] or "", cause))
            else:
                logs.append((self.d.pk, r["id"], r["email"], SendingStatus.PENDING, "", "", "", 0, ""))
                sent.append(r)
        insert_rows(ExclusionLog, EXCLUSION_LOG_COLUMNS, exclusions)
        insert_rows(SendingLog, SENDING_LOG_COLUMNS, logs)
        self.tally.targeted += len(rows)
        self.tally.to_deliver += len(logs)
        if self.checker:
            self.checker.add_rows(sent)

    # -- PostgreSQL: one statement per range -----------------------------------------------------------
    def range_sql(self, lo: int, hi: int) -> tuple[str, list]:
        """One statement for the profiles lo <= id < hi of the target: judge each (`t`), write the
        sending logs and the exclusion logs, and return one row per class of recipients (its size
        and one profile of it, read again by id) and the rows whose address it leaves to Python."""
        projections = self.checker.classes.projections if self.checker else []
        target = audience_profiles(audience=self.d.audience, ids=(lo, hi)).order_by()
        fields = ["id", "email", "email_key", "email_denylisted", *[c for c in self.columns if c != "email"]]
        target_sql, target_params = target.values(*fields).query.sql_with_params()
        params: list = []
        # s: the target's rows, their address trimmed (ASCII whitespace: a row with another is not
        # ASCII, so Python judges it) and their key, and the attributes the classes read.
        lookups = []
        for i, projection in enumerate(projections):
            lookup = projection.lookup_sql("p")
            if lookup:
                lookups.append(f", {lookup[0]} AS a{i}")
                params += lookup[1]
        s_sql = (
            f"SELECT p.*, btrim(p.email, %s) AS e, COALESCE(p.email_key, lower(btrim(p.email, %s))) AS key{''.join(lookups)}"
            f" FROM ({target_sql}) p"
        )
        s_params = [ASCII_WHITESPACE, ASCII_WHITESPACE, *params, *target_params]
        c = ExclusionCause
        cause = (
            f"CASE WHEN s.email = '' THEN '{c.NO_ADDRESS.value}'"
            " WHEN NOT (octet_length(s.e) = char_length(s.e) AND char_length(split_part(s.e, '@', -1)) <= 63)"
            f" THEN '{UNSURE}'"
            " WHEN NOT (char_length(s.e) <= 254 AND char_length(s.e) - char_length(split_part(s.e, '@', -1)) <= 65"
            f" AND s.e ~ %s) THEN '{c.INVALID_SYNTAX.value}'"
            f" WHEN s.email_denylisted OR q.status = '{Quarantine.Status.DENYLIST.value}' THEN '{c.DENYLIST.value}'"
            f" WHEN q.status = '{Quarantine.Status.QUARANTINE.value}' THEN '{c.QUARANTINE.value}'"
            + (f" WHEN x.id IS NOT NULL THEN '{c.DUPLICATE.value}'" if self.duplicates else "")
            + (f" WHEN split_part(s.key, '@', -1) = ANY(%s) THEN '{c.EXCLUDED_DOMAIN.value}'" if self.domains else "")
            + " END"
        )
        cause_params = [ASCII_EMAIL_SQL_RE, *([sorted(self.domains)] if self.domains else [])]
        keys, key_params = [], []
        for i, projection in enumerate(projections):
            expression, more = projection.sql("s", value=f"s.a{i}")
            keys.append(f", {expression} AS k{i}")
            key_params += more
        group_by = "".join(f", CASE WHEN cause IS NULL THEN k{i} END" for i in range(len(projections)))
        profile_columns = ", ".join(f"p.{name}" for name in ["id", "email", "email_key", "email_denylisted", *[c for c in self.columns if c != "email"]])
        sl, el, pt = SendingLog._meta.db_table, ExclusionLog._meta.db_table, Profile._meta.db_table
        sql = (
            f"WITH t AS MATERIALIZED ("
            f" SELECT s.id, s.email, {cause} AS cause{''.join(keys)}"
            f" FROM ({s_sql}) s"
            f" LEFT JOIN {Quarantine._meta.db_table} q ON q.channel = %s AND q.address = s.key"
            + (" LEFT JOIN unnest(%s::bigint[]) AS x(id) ON x.id = s.id" if self.duplicates else "")
            + f"), logs AS ("
            f" INSERT INTO {sl} ({', '.join(SENDING_LOG_COLUMNS)})"
            f" SELECT %s, id, email, '{SendingStatus.PENDING.value}', '', '', '', 0, '' FROM t WHERE cause IS NULL"
            f"), exclusions AS ("
            f" INSERT INTO {el} ({', '.join(EXCLUSION_LOG_COLUMNS)})"
            f" SELECT %s, id, email, cause FROM t WHERE cause IS NOT NULL AND cause <> '{UNSURE}'"
            f"), g AS ("
            f" SELECT min(id) AS id, count(*) AS n, cause FROM t WHERE cause IS DISTINCT FROM '{UNSURE}' GROUP BY cause{group_by}"
            f")"
            f" SELECT g.n, g.cause, {profile_columns} FROM g JOIN {pt} p ON p.id = g.id"
            f" UNION ALL SELECT 0, t.cause, {profile_columns} FROM t JOIN {pt} p ON p.id = t.id WHERE t.cause = '{UNSURE}'"
        )
        # Parameters in the order their placeholders appear.
        params = [*cause_params, *key_params, *s_params, self.d.channel]
        if self.duplicates:
            params.append(sorted(self.duplicates))
        params += [self.d.pk, self.d.pk]
        return sql, params

    def run_range(self, lo: int, hi: int) -> list[tuple]:
        """Run one range's statement on this thread's connection and return its rows."""
        sql, params = self.range_sql(lo, hi)
        with transaction.atomic(), connection.cursor() as cursor:
            # JIT compiles this statement's expressions for ~0.5 s each time (its row estimates are
            # rough), more than it saves on 100,000 rows.
            cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
            cursor.execute(sql, params)
            return cursor.fetchall()

    def take(self, rows: list[tuple]) -> None:
        """Count what a range's statement returned, render its classes, judge its unsure rows."""
        names = ["n", "cause", "id", "email", "email_key", "email_denylisted", *[c for c in self.columns if c != "email"]]
        unsure: list[dict] = []
        for values in rows:
            row = dict(zip(names, values, strict=True))
            if isinstance(row.get("attributes"), str):
                row["attributes"] = json.loads(row["attributes"])
            if row["cause"] == UNSURE:
                unsure.append(row)
                continue
            n = row["n"]
            self.tally.targeted += n
            if row["cause"]:
                self.tally.causes[row["cause"]] += n
            else:
                self.tally.to_deliver += n
                if self.checker:
                    self.checker.add(row, n)
        self.judge_rows(unsure)

    def ranges_postgresql(self, ranges: list[tuple[int, int]], *, connections: int):
        """Yield each range's rows, in order, running up to `connections` statements at once (each
        on its own connection, committed on its own)."""
        if connections <= 1:
            for lo, hi in ranges:
                yield self.run_range(lo, hi)
            return

        def run(bounds):
            try:
                return self.run_range(*bounds)
            finally:
                connection.close()  # this thread's own connection

        with ThreadPoolExecutor(max_workers=connections, thread_name_prefix="prepare") as pool:
            waiting = iter(ranges)
            running = deque(pool.submit(run, bounds) for bounds in islice(waiting, connections))
            try:
                while running:
                    rows = running.popleft().result()
                    for bounds in islice(waiting, 1):
                        running.append(pool.submit(run, bounds))
                    yield rows
            finally:
                for future in running:
                    future.cancel()

    # -- elsewhere: the target read in id order ---------------------------------------------------------
    def portable_rows(self, lo: int, hi: int):
        selected = ["id", "email", "email_key", "email_denylisted", *[c for c in self.columns if c != "email"]]
        rows = audience_profiles(audience=self.d.audience, ids=(lo, hi)).order_by("id").values(*selected)
        batch = []
        for row in rows.iterator(chunk_size=PORTABLE_BATCH):
            batch.append(row)
            if len(batch) >= PORTABLE_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


# --- the phases -----------------------------------------------------------------------------------------
def content_problems(d: Delivery) -> tuple[list[str], list[str], Checker | None]:
    """Phase 1: what is wrong with the content itself (critical, warnings), and the checker of its
    personalization when it compiles. Stores the tracked links."""
    critical: list[str] = []
    warnings: list[str] = []
    if not d.subject.strip():
        critical.append(_("The subject is empty: write a subject."))
    if not d.sender_address or not is_valid_email(d.sender_address):
        critical.append(_("The sender address is missing or not valid: set a sender address."))
    compiled = compile_content(subject=d.subject, html=d.html, text=d.text)
    critical += [p.text for p in compiled.problems if p.level == "critical"]
    checker = Checker.for_content(subject=d.subject, html=d.html, text=d.text) if compiled.ok else None
    if d.html and "unsubscribe_url" not in d.html:
        warnings.append(_("The HTML content has no unsubscribe link: add {{ unsubscribe_url }} (recipients and mailbox providers expect one)."))
    tracked_urls_sync(delivery=d)
    return critical, warnings, checker


def target_ranges(*, audience, chunk: int) -> tuple[int, list[tuple[int, int]]]:
    """Phase 2: the target's size and the id ranges that cut it into statements of about `chunk`
    profiles (one query; nothing loaded)."""
    bounds = audience_profiles(audience=audience).order_by().aggregate(n=CountAgg("id"), lo=Min("id"), hi=Max("id"))
    n = bounds["n"] or 0
    if not n:
        return 0, []
    lo, hi = bounds["lo"], bounds["hi"] + 1
    parts = max(1, -(-n // max(chunk, 1)))
    width = max(1, -(-(hi - lo) // parts))
    return n, [(start, min(start + width, hi)) for start in range(lo, hi, width)]


def _check_running(d: Delivery, *, done: int | None = None, total: int = 0, deadline: float | None = None) -> None:
    """Between statements (and between renders): stop when asked (or when the message left
    preparation), fail past the time limit, else note the progress."""
    state = Delivery.objects.filter(pk=d.pk).values_list("state", "stop_requested").first()
    if state is None or state[0] != State.PREPARING or state[1]:
        raise _Stopped
    if deadline is not None and time.monotonic() >= deadline:
        raise _TooLong
    if done is not None:
        Delivery.objects.filter(pk=d.pk).update(progress=min(99, int(done * 100 / max(total, 1))))


def check_problems(checker: Checker | None) -> tuple[list[str], list[str]]:
    """Phase 4's outcome in words: (critical, warnings)."""
    critical, warnings = [], []
    if checker is None:
        return critical, warnings
    for error, count in checker.errors.items():
        critical.append(
            _sentence(
                ngettext("Personalization failed for %(n)d profile: %(error)s", "Personalization failed for %(n)d profiles: %(error)s", count)
                % {"n": count, "error": error}
            )
        )
    for name, count in sorted(checker.missing.items()):
        warnings.append(
            ngettext(
                "The variable “%(name)s” is missing for %(n)d profile: that recipient will see it empty (use |default(…)).",
                "The variable “%(name)s” is missing for %(n)d profiles: they will see it empty (use |default(…)).",
                count,
            )
            % {"name": name, "n": count}
        )
    return critical, warnings


def finish(*, d: Delivery, revision: int, tally: Tally, critical: list[str], warnings: list[str], elapsed: float) -> None:
    """Phase 5: the journal (volume per cause, warnings, errors) and the state, unless the message
    left preparation meanwhile (then its logs go)."""
    with transaction.atomic():
        current = Delivery.objects.select_for_update().get(pk=d.pk)
        if current.state != State.PREPARING or current.revision != revision:
            _delete_logs(d.pk)
            return
        for cause, count in sorted(tally.causes.items()):
            _journal(
                d.pk,
                ngettext("%(n)d profile excluded: %(cause)s.", "%(n)d profiles excluded: %(cause)s.", count)
                % {"n": count, "cause": ExclusionCause(cause).label},
            )
        for text in warnings:
            _journal(d.pk, text, JournalEntry.Level.WARNING)
        for text in critical:
            _journal(d.pk, text, JournalEntry.Level.CRITICAL)
        current.targeted_count, current.to_deliver_count = tally.targeted, tally.to_deliver
        current.warnings_count = len(warnings)
        current.progress = 100
        current.prepared_at = timezone.now()
        current.sent_count = current.failed_count = current.processed_count = 0
        if critical:
            current.state = State.PREPARATION_FAILED
            current.prepared_revision = None
            _journal(
                d.pk,
                ngettext(
                    "Analysis failed in %(s).1f s (%(k)d error): correct it and prepare again.",
                    "Analysis failed in %(s).1f s (%(k)d errors): correct them and prepare again.",
                    len(critical),
                )
                % {"s": elapsed, "k": len(critical)},
                JournalEntry.Level.CRITICAL,
            )
        else:
            current.state = State.READY
            current.prepared_revision = revision
            _journal(
                d.pk,
                ngettext("Analysis completed in %(s).1f s (%(k)d warning).", "Analysis completed in %(s).1f s (%(k)d warnings).", len(warnings))
                % {"s": elapsed, "k": len(warnings)},
            )
        current.save()


def delivery_prepare_run(*, delivery_id: int, portable: bool | None = None) -> None:
    """The preparation itself (run by the task). Preparing again replaces the previous preparation.
    It never stays "Preparing…": past PREPARATION_TIME_LIMIT (or the task's soft time limit), or on
    any error, it fails with a critical line of the journal that says why. `portable`: force the
    Python path (tests compare it with PostgreSQL's)."""
    d = Delivery.objects.filter(pk=delivery_id, state=State.PREPARING).select_related("audience").first()
    if d is None:
        log.info("prepare: delivery %s is not preparing; nothing to do", delivery_id)
        return
    too_long = _(
        "The preparation took longer than %(s)s s and was stopped: simplify the personalization or split the "
        "audience, then prepare again."
    ) % {"s": f"{_preparation_time_limit():g}"}
    try:
        _prepare(d, portable=portable)
    except (_TooLong, SoftTimeLimitExceeded):
        log.warning("prepare: delivery %s ran past its time limit", d.pk)
        _preparation_failed(delivery_id=d.pk, revision=d.revision, text=too_long)
    except Exception as e:
        log.exception("prepare: delivery %s failed", d.pk)
        _preparation_failed(
            delivery_id=d.pk,
            revision=d.revision,
            text=_("The preparation stopped on an error (%(error)s). Prepare again; if it happens again, tell an administrator.")
            % {"error": f"{type(e).__name__}: {e}"},
        )


def _prepare(d: Delivery, *, portable: bool | None) -> None:
    started = time.monotonic()
    deadline = started + _preparation_time_limit()
    revision = d.revision
    _delete_logs(d.pk)

    critical, warnings, checker = content_problems(d)
    if checker:  # a slow personalization: Stop preparation and the time limit still work at once
        checker.guard = lambda: _check_running(d, deadline=deadline)
    domains = excluded_domains()
    chunk = int(getattr(settings, "PREPARATION_CHUNK", 100_000))
    total, ranges = target_ranges(audience=d.audience, chunk=chunk)
    writer = Writer(delivery=d, checker=checker, duplicates=duplicate_ids(audience=d.audience, channel=d.channel, domains=domains), domains=domains)
    try:
        if connection.vendor == "postgresql" and not portable:
            # Outside a transaction (a worker), ranges are judged on several connections at once.
            connections = 1 if connection.in_atomic_block else max(1, int(getattr(settings, "PREPARATION_CONNECTIONS", 2)))
            with closing(writer.ranges_postgresql(ranges, connections=connections)) as results:
                for rows in results:
                    writer.take(rows)
                    _check_running(d, done=writer.tally.targeted, total=total, deadline=deadline)
        else:
            for lo, hi in ranges:
                for rows in writer.portable_rows(lo, hi):
                    writer.judge_rows(rows)
                    _check_running(d, done=writer.tally.targeted, total=total, deadline=deadline)
    except _Stopped:
        _delete_logs(d.pk)
        log.info("prepare: delivery %s stopped", d.pk)
        return

    tally = writer.tally
    # A send per recipient's time (issue 14): each log's own due time (one statement), rows without one excluded.
    no_date = due_times_compute(delivery=d)
    if no_date:
        tally.causes[ExclusionCause.SEND_DATE_MISSING] += no_date
        tally.to_deliver -= no_date
    more_critical, more_warnings = check_problems(checker)
    critical += more_critical
    warnings += more_warnings
    if tally.targeted and not tally.to_deliver and not critical:
        critical.append(_("Every targeted profile was excluded: there is nobody to send to."))
    elif not tally.targeted:
        critical.append(_("The audience is empty: choose an audience with profiles."))
    if checker:
        log.info("prepare: delivery %s: %d recipients checked with %d renders", d.pk, tally.to_deliver, checker.renders)
    finish(d=d, revision=revision, tally=tally, critical=critical, warnings=warnings, elapsed=time.monotonic() - started)


# --- a preparation that cannot finish (issue 15) ------------------------------------------------------
PREPARATION_STUCK_GRACE_SECONDS = 300


def _preparation_time_limit() -> float:
    return float(getattr(settings, "PREPARATION_TIME_LIMIT", 3600))


def _preparation_failed(*, delivery_id: int, revision: int, text: str) -> None:
    """End a preparation that could not finish: its rows are removed and the message says why
    (preparation failed, a critical journal line), so it never stays "Preparing…"."""
    with transaction.atomic():
        _delete_logs(delivery_id)
        changed = Delivery.objects.filter(pk=delivery_id, state=State.PREPARING, revision=revision).update(
            state=State.PREPARATION_FAILED, prepared_revision=None, progress=0, updated_at=timezone.now()
        )
        if changed:
            _journal(delivery_id, text, JournalEntry.Level.CRITICAL)


def deliveries_fail_stuck_preparations(*, now=None) -> int:
    """A preparation whose worker died outright (kill -9, out of memory) never ends on its own: past
    PREPARATION_TIME_LIMIT and a grace period since it started (its `updated_at`: nothing else saves
    the message while it prepares), it fails and says so. Run by the beat's tick."""
    from datetime import timedelta

    now = now or timezone.now()
    limit = timedelta(seconds=_preparation_time_limit() + PREPARATION_STUCK_GRACE_SECONDS)
    failed = 0
    for pk, revision in Delivery.objects.filter(state=State.PREPARING, updated_at__lt=now - limit).values_list("pk", "revision"):
        _preparation_failed(
            delivery_id=pk,
            revision=revision,
            text=_("The preparation stopped without finishing (its worker stopped). Prepare the message again."),
        )
        failed += 1
    return failed


__all__ = ["CHECK_LINKS", "Checker", "deliveries_fail_stuck_preparations", "delivery_prepare_run", "exclusion_cause", "insert_rows"]
