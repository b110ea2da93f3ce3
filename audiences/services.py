"""Writes of the audiences app: profiles, audiences, quarantine rules (DOMAIN.md §5), imports."""

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, PositiveIntegerField, ProtectedError, Value, When
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.errors import DispatchError, InvalidInput
from accounts.roles import (
    ACCESS,
    ADMINISTRATION,
    GENERIC_IMPORT,
    MONITOR_DELIVERY,
    PREPARE_DELIVERY,
    role_required_message,
)
from accounts.selectors import user_has_any_role
from accounts.services import require_role

from . import imports
from .conditions import conditions_clean
from .emails import email_key, is_valid_email, normalize_email
from .failures import COMPLAINT, QUARANTINE_TYPES, FailureReason, FailureType
from .models import Audience, AudienceMember, Channel, ConsentChange, ImportJob, Profile, Quarantine, QuarantineChange

logger = logging.getLogger(__name__)

S = Quarantine.Status

SOFT_ERRORS_TO_QUARANTINE = 5
CLEANUP_DAYS = 10
CLEANUP_DAYS_MAILBOX_FULL = 30
MAILBOX_FULL = FailureReason.MAILBOX_FULL

# Statuses an error never changes: the operator decided (allowlist) or the address is already out.
_STICKY = {S.ALLOWLIST}


# --- quarantine rules (DOMAIN.md §5) --------------------------------------------------------


def _apply_failure(row: Quarantine, *, failure_type: str, reason: str, text: str, at: datetime) -> bool:
    """Apply one failure to `row` in memory; True when something changed."""
    if row.status in _STICKY:
        return False
    if failure_type == COMPLAINT:
        row.status = S.DENYLIST
    elif failure_type == FailureType.HARD:
        row.error_count += 1
        if row.status != S.DENYLIST:
            row.status = S.QUARANTINE
    elif failure_type == FailureType.SOFT:
        same_day = row.last_error_at is not None and timezone.localdate(row.last_error_at) == timezone.localdate(at)
        if same_day and row.error_count > 0:
            # A soft error counts once per day at most: keep the count, refresh the facts only.
            if at > row.last_error_at:
                row.last_error_at, row.reason, row.text = at, reason or row.reason, text or row.text
            return True
        row.error_count += 1
        if row.status not in (S.QUARANTINE, S.DENYLIST):
            row.status = S.QUARANTINE if row.error_count >= SOFT_ERRORS_TO_QUARANTINE else S.ERRONEOUS
    else:
        return False
    if row.last_error_at is None or at >= row.last_error_at:
        row.last_error_at = at
        row.reason = (reason or "")[:64]
        row.text = text or ""
    return True


def quarantine_record_failures(*, failures: list[dict]) -> int:
    """Record delivery failures in quarantine, a batch at a time (a constant number of queries).

    Each item: `address, channel, failure_type (a FailureType or COMPLAINT: audiences.failures), reason
    (a FailureReason), text, at`. Rows are created as needed, locked in id order,
    updated in memory in time order, then written with one statement. Returns the rows changed.
    """
    items = []
    for f in failures:
        ftype = f.get("failure_type") or ""
        address = (f.get("address") or "").strip().lower()
        if ftype not in QUARANTINE_TYPES or not address:
            continue
        items.append({**f, "address": address, "channel": f.get("channel") or Channel.EMAIL})
    if not items:
        return 0
    items.sort(key=lambda f: f["at"])
    keys = {(f["address"], f["channel"]) for f in items}
    with transaction.atomic():
        Quarantine.objects.bulk_create(
            [Quarantine(address=a, channel=c, status=S.UNKNOWN) for a, c in sorted(keys)], ignore_conflicts=True
        )
        addresses = {a for a, _c in keys}
        channels = {c for _a, c in keys}
        rows = {
            (r.address, r.channel): r
            for r in Quarantine.objects.select_for_update()
            .filter(address__in=addresses, channel__in=channels)
            .order_by("id")
        }
        changed = {}
        for f in items:
            row = rows.get((f["address"], f["channel"]))
            if row is None:
                continue
            if _apply_failure(row, failure_type=f["failure_type"], reason=f.get("reason", ""), text=f.get("text", ""), at=f["at"]):
                changed[row.pk] = row
        now = timezone.now()
        for row in changed.values():
            row.updated_at = now
        Quarantine.objects.bulk_update(
            list(changed.values()), ["status", "error_count", "last_error_at", "reason", "text", "updated_at"]
        )
    return len(changed)


def quarantine_record_failure(*, address: str, channel: str, failure_type: str, reason: str = "", text: str = "", at=None) -> None:
    """One failure (DOMAIN.md §5): hard -> Quarantine at once; soft counted once a day at most,
    status Erroneous, the 5th -> Quarantine; complaint -> On denylist; ignored -> nothing."""
    quarantine_record_failures(
        failures=[
            {
                "address": address,
                "channel": channel,
                "failure_type": failure_type,
                "reason": reason,
                "text": text,
                "at": at or timezone.now(),
            }
        ]
    )


def quarantine_record_successes(*, addresses: list[str], channel: str = Channel.EMAIL, at=None) -> int:
    """Record successful deliveries: the last delivery time of known addresses is set, and an
    Erroneous address returns to Valid (its error count reset). One statement; addresses without
    a quarantine row get none. Returns the rows touched."""
    keys = {(a or "").strip().lower() for a in addresses} - {""}
    if not keys:
        return 0
    at = at or timezone.now()
    return Quarantine.objects.filter(channel=channel, address__in=keys).update(
        last_delivery_at=at,
        status=Case(When(status=S.ERRONEOUS, then=Value(S.VALID)), default=F("status")),
        error_count=Case(
            When(status=S.ERRONEOUS, then=Value(0)), default=F("error_count"), output_field=PositiveIntegerField()
        ),
        updated_at=timezone.now(),
    )


def quarantine_record_success(*, address: str, channel: str = Channel.EMAIL, at=None) -> None:
    quarantine_record_successes(addresses=[address], channel=channel, at=at)


def quarantine_cleanup(*, now=None) -> int:
    """The daily cleanup: Erroneous -> Valid after 10 days without error (30 when the last error
    was Mailbox full). Quarantine and On denylist are never lifted automatically. Returns the count."""
    now = now or timezone.now()
    base = Quarantine.objects.filter(status=S.ERRONEOUS)
    stale = base.filter(last_error_at__lte=now - timedelta(days=CLEANUP_DAYS)).exclude(reason=MAILBOX_FULL) | base.filter(
        reason=MAILBOX_FULL, last_error_at__lte=now - timedelta(days=CLEANUP_DAYS_MAILBOX_FULL)
    )
    count = stale.update(status=S.VALID, error_count=0, updated_at=now)
    if count:
        logger.info("quarantine cleanup: %d erroneous address(es) back to valid", count)
    return count


def _require_quarantine_role(user) -> None:
    if not user_has_any_role(user=user, roles=(ADMINISTRATION, MONITOR_DELIVERY)):
        raise PermissionDenied(role_required_message(ADMINISTRATION, MONITOR_DELIVERY))


def quarantine_set_status(*, actor, quarantine: Quarantine, status: str, source: str = "page") -> Quarantine:
    """A person sets a quarantine row's status (e.g. back to Valid). Audited. Returning to Valid
    (or Unknown) resets the error count, as the automatic cleanup does."""
    _require_quarantine_role(actor)
    if status not in Quarantine.Status.values:
        raise InvalidInput(
            _("“%(status)s” is not a quarantine status: choose one of %(choices)s.")
            % {"status": status, "choices": ", ".join(Quarantine.Status.values)},
            code="invalid_status",
        )
    with transaction.atomic():
        row = Quarantine.objects.select_for_update().get(pk=quarantine.pk)
        before = row.status
        if before == status:
            return row
        row.status = status
        fields = ["status", "updated_at"]
        if status in (S.VALID, S.UNKNOWN, S.ALLOWLIST):
            row.error_count = 0
            fields.append("error_count")
        row.save(update_fields=fields)
        QuarantineChange.objects.create(
            address=row.address, channel=row.channel, action=QuarantineChange.Action.STATUS_CHANGED,
            before=before, after=status, actor=actor, source=source,
        )
    return row


def quarantine_delete(*, actor, quarantine: Quarantine, source: str = "page") -> None:
    """A person deletes a quarantine row (the address is treated as new again). Audited."""
    _require_quarantine_role(actor)
    with transaction.atomic():
        deleted, _n = Quarantine.objects.filter(pk=quarantine.pk).delete()
        if deleted:
            QuarantineChange.objects.create(
                address=quarantine.address, channel=quarantine.channel, action=QuarantineChange.Action.DELETED,
                before=quarantine.status, after="", actor=actor, source=source,
            )


# --- profiles ------------------------------------------------------------------------------------

PROFILE_FIELDS = ("email", "phone", "first_name", "last_name", "language", "time_zone", "attributes",
                  "email_denylisted", "sms_denylisted")


def _clean_profile_data(data: dict) -> dict:
    """Validate profile fields with the same rules as the import; raise InvalidInput."""
    clean = {k: v for k, v in data.items() if k in PROFILE_FIELDS}
    if "email" in clean:
        email = normalize_email(clean["email"])
        if email and not is_valid_email(email):
            raise InvalidInput(_("“%(v)s” is not a valid email address.") % {"v": email}, code="invalid_email")
        clean["email"] = email
    if clean.get("phone"):
        phone = imports.normalize_phone(clean["phone"])
        if not imports._E164.match(phone):
            raise InvalidInput(
                _("“%(v)s” is not a phone number in international format, e.g. +33612345678.") % {"v": clean["phone"]},
                code="invalid_phone",
            )
        clean["phone"] = phone
    if clean.get("time_zone") and clean["time_zone"] not in imports.time_zones():
        raise InvalidInput(
            _("“%(v)s” is not a time zone name: use an IANA name such as Europe/Paris.") % {"v": clean["time_zone"]},
            code="invalid_time_zone",
        )
    if clean.get("language") and not imports._LANGUAGE.match(clean["language"]):
        raise InvalidInput(
            _("“%(v)s” is not a language code such as fr or en-GB.") % {"v": clean["language"]}, code="invalid_language"
        )
    if "attributes" in clean:
        attrs = clean["attributes"]
        if not isinstance(attrs, dict):
            raise InvalidInput(_("Attributes must be an object of names and values."), code="invalid_attributes")
    return clean


def _save_profile(profile: Profile) -> Profile:
    profile.email_key = email_key(profile.email) or None
    if not profile.email and not profile.phone:
        raise InvalidInput(_("A profile needs an email address or a phone number."), code="profile_unreachable")
    try:
        with transaction.atomic():
            profile.save()
    except IntegrityError:
        raise InvalidInput(
            _("Another profile already has the address %(email)s: open that profile instead.") % {"email": profile.email},
            code="duplicate_email",
        )
    return profile


DENYLIST_FIELDS = {"email_denylisted": Channel.EMAIL, "sms_denylisted": Channel.SMS}


def _consent_changes(*, user, profile: Profile, clean: dict, reason: str) -> list[tuple[str, bool]]:
    """The denylist flags this edit changes, as (channel, denylisted after). Lifting a flag (the
    person opted out: re-subscribing them) needs Administration and a recorded reason."""
    changes = []
    for field, channel in DENYLIST_FIELDS.items():
        if field in clean and bool(clean[field]) != bool(getattr(profile, field)):
            changes.append((channel, bool(clean[field])))
    if any(not after for _channel, after in changes):
        roles = ACCESS["administer"]
        if not user_has_any_role(user=user, roles=roles):
            raise PermissionDenied(
                _("Only an administrator can re-subscribe a person who opted out: ask one, with the person's request.")
            )
        if not (reason or "").strip():
            raise InvalidInput(
                _("Say why this person is re-subscribed (for example, where and when they asked): it is recorded."),
                code="reason_required",
                fields={"resubscribe_reason": _("Say why this person is re-subscribed: it is recorded.")},
            )
    return changes


def profile_create(*, user, **data) -> Profile:
    require_role(user=user, role=PREPARE_DELIVERY)
    data.pop("resubscribe_reason", None)
    return _save_profile(Profile(**_clean_profile_data(data)))


def profile_update(*, user, profile: Profile, resubscribe_reason: str = "", source: str = "page", **data) -> Profile:
    """Edit a profile. Setting a denylist flag is audited; lifting one (re-subscribing a person who
    opted out) needs Administration and a reason, and is audited with it."""
    require_role(user=user, role=PREPARE_DELIVERY)
    clean = _clean_profile_data(data)
    changes = _consent_changes(user=user, profile=profile, clean=clean, reason=resubscribe_reason)
    for name, value in clean.items():
        setattr(profile, name, value)
    with transaction.atomic():
        _save_profile(profile)
        ConsentChange.objects.bulk_create(
            [
                ConsentChange(profile=profile, address=profile.email or profile.phone or "", channel=channel, denylisted=after,
                              reason=(resubscribe_reason or "").strip() if not after else "", actor=user, source=source)
                for channel, after in changes
            ]
        )  # fmt: skip
    return profile


# --- audiences -----------------------------------------------------------------------------------


def _clean_audience(*, name, kind, conditions):
    name = (name or "").strip()
    if not name:
        raise InvalidInput(_("Give the audience a name."), code="name_required")
    if kind not in Audience.Kind.values:
        raise InvalidInput(_("An audience is a list or a filter."), code="invalid_kind")
    return name, (conditions_clean(conditions) if kind == Audience.Kind.FILTER else {})


def audience_create(*, user, name: str, kind: str = Audience.Kind.LIST, description: str = "", conditions=None) -> Audience:
    require_role(user=user, role=PREPARE_DELIVERY)
    name, conditions = _clean_audience(name=name, kind=kind, conditions=conditions)
    return Audience.objects.create(name=name, kind=kind, description=description or "", conditions=conditions, created_by=user)


def audience_update(*, user, audience: Audience, name: str | None = None, description: str | None = None, conditions=None) -> Audience:
    """Rename, describe, or (filters) change the conditions. The kind never changes."""
    require_role(user=user, role=PREPARE_DELIVERY)
    name, cleaned = _clean_audience(
        name=audience.name if name is None else name,
        kind=audience.kind,
        conditions=audience.conditions if conditions is None else conditions,
    )
    audience.name = name
    audience.conditions = cleaned
    if description is not None:
        audience.description = description
    audience.save(update_fields=["name", "description", "conditions", "updated_at"])
    return audience


def audience_delete(*, user, audience: Audience) -> None:
    require_role(user=user, role=PREPARE_DELIVERY)
    try:
        audience.delete()
    except ProtectedError:  # a message that still targets it keeps it
        raise DispatchError(
            _("The audience “%(name)s” is used by a message: choose another audience there first.") % {"name": audience.name},
            code="audience_in_use",
        )


def _require_list(audience: Audience) -> None:
    if audience.kind != Audience.Kind.LIST:
        raise DispatchError(
            _("“%(name)s” is a filter: its members follow its conditions. Edit the conditions instead.") % {"name": audience.name},
            code="audience_is_filter",
        )


def _resolve_profile_ids(*, profile_ids=(), emails=()) -> tuple[set[int], list[str]]:
    ids = {int(i) for i in profile_ids}
    found = set(Profile.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()
    missing = [str(i) for i in sorted(ids - found)]
    keys = {email_key(e) for e in emails if e and e.strip()}
    if keys:
        by_key = dict(Profile.objects.filter(email_key__in=keys).values_list("email_key", "pk"))
        found |= set(by_key.values())
        missing += sorted(keys - set(by_key))
    return found, missing


def audience_members_add(*, user, audience: Audience, profile_ids=(), emails=()) -> int:
    """Add profiles (by id or email) to a list. Unknown ones are refused, none added. Returns the
    number newly added."""
    require_role(user=user, role=PREPARE_DELIVERY)
    _require_list(audience)
    ids, missing = _resolve_profile_ids(profile_ids=profile_ids, emails=emails)
    if missing:
        raise InvalidInput(
            _("No profile matches %(list)s: create the profiles first (or import them), then add them.") % {"list": ", ".join(missing[:10])},
            code="unknown_profile",
        )
    before = AudienceMember.objects.filter(audience=audience).count()
    AudienceMember.objects.bulk_create([AudienceMember(audience=audience, profile_id=i) for i in ids], ignore_conflicts=True)
    Audience.objects.filter(pk=audience.pk).update(updated_at=timezone.now())
    return AudienceMember.objects.filter(audience=audience).count() - before


def audience_members_remove(*, user, audience: Audience, profile_ids=(), emails=()) -> int:
    require_role(user=user, role=PREPARE_DELIVERY)
    _require_list(audience)
    ids, _missing = _resolve_profile_ids(profile_ids=profile_ids, emails=emails)
    removed, _n = AudienceMember.objects.filter(audience=audience, profile_id__in=ids).delete()
    Audience.objects.filter(pk=audience.pk).update(updated_at=timezone.now())
    return removed


# --- CSV import ----------------------------------------------------------------------------------
IMPORT_TASK = "audiences.import_run"  # tasks.py registers it under this name


def _enqueue_after_commit(name: str, *args) -> None:
    """Enqueue the task registered as `name` once the transaction commits. Looked up by name in the
    Celery app's registry: tasks import services, never the other way round (eager mode in tests
    still runs it at once; AudiencesConfig.ready registers the tasks in every process)."""
    transaction.on_commit(lambda: current_app.tasks[name].delay(*args))




def import_create(*, user, uploaded, audience: Audience | None = None, source: str = "page") -> ImportJob:
    """Accept an uploaded CSV (role Generic import) and enqueue its import after commit.

    Quick whole-file checks run here (empty, header, email column) so the person learns at once;
    the task checks the rest (every byte UTF-8) before it imports anything."""
    require_role(user=user, role=GENERIC_IMPORT)
    if audience is not None:
        _require_list(audience)
    if (uploaded.size or 0) > settings.IMPORT_MAX_BYTES:
        raise InvalidInput(
            _("The file is larger than %(max)s: split it into smaller files and import them one by one.")
            % {"max": filesizeformat(settings.IMPORT_MAX_BYTES)},
            code="file_too_large",
        )
    try:
        imports.preflight(uploaded)
    except imports.FileRefused as e:
        raise InvalidInput(str(e), code="file_refused")
    job = ImportJob(audience=audience, file_name=(uploaded.name or "import.csv")[:255], size=uploaded.size or 0, created_by=user)
    uploaded.seek(0)
    job.file.save(f"import-{timezone.now():%Y%m%d%H%M%S}.csv", uploaded, save=False)
    job.save()
    _enqueue_after_commit(IMPORT_TASK, job.pk)
    return job


def import_run(*, job_id: int) -> ImportJob | None:
    """Run an import (the task's body). Idempotent: a finished or running import is left alone,
    and the upsert itself changes nothing the second time."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        logger.info("import %s: not pending (missing, running or done); nothing to do", job_id)
        return None
    job = ImportJob.objects.get(pk=job_id)
    try:
        with job.file.open("rb") as binary:
            imports.check_utf8(binary)
            reader = imports.open_csv(binary)
            columns = imports.read_header(reader)
            ImportJob.objects.filter(pk=job.pk).update(columns=columns)
            run = _import_postgresql if connection.vendor == "postgresql" else _import_portable
            totals = run(job, binary, reader, columns)
        if not totals["rows_read"]:
            raise imports.FileRefused(_("The file has a header but no rows: nothing was imported."))
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.DONE, progress=100, bytes_done=job.size, finished_at=timezone.now(), **totals
        )
    except imports.FileRefused as e:
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.REFUSED, message=str(e), finished_at=timezone.now())
    except Exception as e:  # noqa: BLE001 - the job must not stay 'running' forever
        logger.exception("import %s failed", job_id)
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED,
            message=_("The import stopped: %(error)s. Import the file again; rows already imported will not change.") % {"error": e},
            finished_at=timezone.now(),
        )
    finally:
        _discard_file(job)
    job.refresh_from_db()
    return job


_READ_SHARE = 80  # percent of the progress bar for reading the file (the rest: merging)


def _parsed_chunks(chunks, binary):
    """Run the reader (`chunks`, a generator) in a background thread, a couple of chunks ahead of
    the database work (memory stays bounded: the queue holds at most two chunks). Yields (chunk,
    bytes read)."""
    queued: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce():
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                queued.put((chunk, binary.tell()))
            queued.put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            queued.put(e)

    thread = threading.Thread(target=produce, name="import-parser", daemon=True)
    thread.start()
    try:
        while True:
            item = queued.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queued.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def _import_postgresql(job, binary, reader, columns) -> dict:
    """Read the file once in a background thread while this thread stages it: blocks of plain lines
    go to PostgreSQL's own CSV reader as they are, the rest is read by csv.reader (cells trimmed).
    Then the staged rows are judged (one statement per raw table: rejections with their lines, valid
    rows staged by address) and each partition merged (one statement), on IMPORT_MERGE_CONNECTIONS
    connections at once; the rare rows PostgreSQL cannot judge exactly are judged in Python."""
    totals = {"rows_read": 0, "created_count": 0, "updated_count": 0, "merged_count": 0, "rejected_count": 0}
    started = time.monotonic()
    # Outside a transaction (a worker), raw tables and partitions are handled by several connections at once.
    workers = max(1, settings.IMPORT_MERGE_CONNECTIONS) if not connection.in_atomic_block else 1
    delimiter = reader.dialect.delimiter
    stage = imports.PostgresStage(columns=columns, name=f"audiences_import_{job.pk}", raws=workers, shared=workers > 1)

    def staged(part) -> None:
        stage.add_lines(part.lines)
        stage.add(part.rows)
        if part.rejections:
            imports.save_rejections(job_id=job.pk, rejections=part.rejections)
        totals["rows_read"] += part.read
        totals["rejected_count"] += part.rejected

    try:
        for part, bytes_read in _parsed_chunks(imports.iter_staged(binary, columns, delimiter), binary):
            if part.raw is not None:
                copied = stage.copy_block(part, delimiter=delimiter)
                if copied is None:  # PostgreSQL refused a line of it: csv.reader reads the block
                    for again in imports.parse_block(part, columns, delimiter):
                        staged(again)
                else:
                    totals["rows_read"] += copied
            else:
                staged(part)
            ImportJob.objects.filter(pk=job.pk).update(
                bytes_done=bytes_read, progress=int(_READ_SHARE * bytes_read / max(job.size, 1)), **totals
            )
        read_done = time.monotonic()
        validate = imports.make_validator(columns)
        for rejected, unsure in _in_parallel(stage.check_raw, range(len(stage.raw_tables)), workers=workers, job_id=job.pk):
            totals["rejected_count"] += rejected
            problems, rows = [], []
            for line, cells in unsure:  # non-ASCII addresses or phones, long domains: judged in Python
                row = validate(cells, line, problems)
                if row is None:
                    totals["rejected_count"] += 1
                else:
                    rows.append((line, row))
            stage.add(rows)
            imports.save_rejections(job_id=job.pk, rejections=problems)
        checked = time.monotonic()
        done = 0
        merge = partial(stage.merge_part, audience_id=job.audience_id)
        for created, updated, merged in _in_parallel(merge, range(stage.parts), workers=workers):
            done += 1
            totals["created_count"] += created
            totals["updated_count"] += updated
            totals["merged_count"] += merged
            ImportJob.objects.filter(pk=job.pk).update(
                progress=_READ_SHARE + int((100 - _READ_SHARE) * done / stage.parts) - 1, **totals
            )
        logger.info("import %s: read and staged in %.1fs, judged in %.1fs, merged in %.1fs (%d connection(s))", job.pk,
                    read_done - started, checked - read_done, time.monotonic() - checked, workers)
    finally:
        stage.close()
    return totals


def _in_parallel(function, items, *, workers: int, **kwargs):
    """Yield function(item, **kwargs) for each item, run on `workers` connections at once (each
    thread its own connection) or here when 1; in the order they end."""
    if workers <= 1:
        for item in items:
            yield function(item, **kwargs)
        return

    def run(item):
        try:
            return function(item, **kwargs)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        yield from (future.result() for future in as_completed([pool.submit(run, item) for item in items]))


def _import_portable(job, binary, reader, columns) -> dict:
    totals = {"rows_read": 0, "created_count": 0, "updated_count": 0, "merged_count": 0, "rejected_count": 0}
    for chunk in imports.iter_chunks(reader, columns):
        created, updated, merged = imports.upsert_chunk_portable(
            rows=chunk.rows, audience_id=job.audience_id, started_at=job.started_at
        )
        if chunk.rejections:
            imports.save_rejections(job_id=job.pk, rejections=chunk.rejections)
        totals["rows_read"] += chunk.read
        totals["created_count"] += created
        totals["updated_count"] += updated
        totals["merged_count"] += merged
        totals["rejected_count"] += chunk.rejected
        bytes_read = binary.tell()
        ImportJob.objects.filter(pk=job.pk).update(bytes_done=bytes_read, progress=int(99 * bytes_read / max(job.size, 1)), **totals)
    return totals


def _discard_file(job: ImportJob) -> None:
    """The uploaded file is not kept once imported (the report lives in the database)."""
    if job.file:
        try:
            job.file.delete(save=False)
        except OSError:
            logger.warning("import %s: could not delete %s", job.pk, job.file.name)
        ImportJob.objects.filter(pk=job.pk).update(file="")


def import_reap(*, now=None, stale_after: timedelta = timedelta(hours=6)) -> int:
    """Imports whose worker died: a job running for longer than `stale_after` is marked failed
    (a person can import the file again: rows already imported will not change), and staging
    tables left behind by such jobs are dropped (PostgreSQL). Returns the jobs marked failed."""
    now = now or timezone.now()
    count = ImportJob.objects.filter(status=ImportJob.Status.RUNNING, started_at__lt=now - stale_after).update(
        status=ImportJob.Status.FAILED,
        finished_at=now,
        message=_("The import stopped before the end (its worker stopped). Import the file again; rows already imported will not change."),
    )
    if connection.vendor == "postgresql":
        running = set(ImportJob.objects.filter(status=ImportJob.Status.RUNNING).values_list("pk", flat=True))
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                           "AND tablename ~ '^audiences_import_[0-9]+_[0-9]+$'")
            for (table,) in cursor.fetchall():
                if int(table.split("_")[2]) not in running:
                    cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
            cursor.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() "
                           "AND sequencename ~ '^audiences_import_[0-9]+_[0-9]+$'")
            for (sequence,) in cursor.fetchall():
                if int(sequence.split("_")[2]) not in running:
                    cursor.execute(f'DROP SEQUENCE IF EXISTS "{sequence}"')
    if count:
        logger.warning("import reaper: %d import(s) marked failed", count)
    return count


def profile_denylist_set(*, profile_id: int, channel: str = Channel.EMAIL, at=None) -> bool:
    """Put the profile (not the address: DOMAIN.md §5) on the channel's denylist, as an unsubscribe
    does. The recipient's own request: no role involved. True when the flag changed."""
    field = "email_denylisted" if channel == Channel.EMAIL else "sms_denylisted"
    return bool(Profile.objects.filter(pk=profile_id, **{field: False}).update(**{field: True, "updated_at": at or timezone.now()}))
