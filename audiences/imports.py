"""CSV import of profiles (issue 3): streaming parse, row validation, set-based upsert.

The file is read once to prove it is UTF-8 (a refusal imports nothing), then parsed as a stream in
chunks of CHUNK_ROWS rows: memory stays flat whatever the file's size. Each chunk's valid rows are
merged by address (case-insensitive), then upserted by `email_key`:

- PostgreSQL: COPY into a temporary staging table, then one `INSERT … SELECT … ON CONFLICT DO
  UPDATE … WHERE <something changes>` that reports inserted / updated rows;
- elsewhere (SQLite): one SELECT of the chunk's existing profiles, then bulk_create / bulk_update.

Both paths follow the same rules: a non-empty cell overwrites, an empty cell leaves the stored
value alone, attributes are merged key by key, and a row that would change nothing writes nothing
(so importing the same file again changes nothing). Profiles are added to the import's audience
(a list) with INSERT … ON CONFLICT DO NOTHING.
"""

import codecs
import csv
import io
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from functools import lru_cache

from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .emails import is_valid_email, normalize_email
from .models import AudienceMember, ImportRejection, Profile

CHUNK_ROWS = 20_000
KNOWN = ("email", "phone", "first_name", "last_name", "language", "time_zone")
PROFILE_COLUMNS = ("email", "email_key", "phone", "first_name", "last_name", "language", "time_zone", "attributes")
HEADER_ALIASES = {"e-mail": "email", "email_address": "email", "firstname": "first_name", "lastname": "last_name",
                  "timezone": "time_zone", "tz": "time_zone", "lang": "language", "mobile": "phone"}
MAX_LEN = {"first_name": 150, "last_name": 150}
_PHONE_STRIP = str.maketrans("", "", " .-()/\u00a0")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$")
_NON_ATTR = re.compile(r"[^a-z0-9_-]+")
csv.field_size_limit(1_000_000)


class FileRefused(Exception):
    """The whole file is refused (nothing is imported); the message says why and what to do."""


@lru_cache(maxsize=1)
def time_zones() -> frozenset:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def normalize_phone(value: str) -> str:
    phone = value.translate(_PHONE_STRIP)
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    return phone


def attribute_name(header: str) -> str:
    """`"Loyalty tier"` -> `"loyalty_tier"`: attribute names usable in filters and templates."""
    return _NON_ATTR.sub("_", header.strip().lower()).strip("_")[:64]


# --- whole-file checks ---------------------------------------------------------------------------


def _refuse_not_utf8(line: int):
    raise FileRefused(
        _(
            "The file is not UTF-8 text (line %(line)d has a byte that is not UTF-8). Save it as "
            "“CSV UTF-8” from your spreadsheet and import it again; nothing was imported."
        )
        % {"line": line}
    )


def check_utf8(fileobj, *, block: int = 1 << 20, limit: int | None = None) -> None:
    """Read the binary file once (or its first `limit` bytes); refuse it unless it is UTF-8.
    Then rewind."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    line, seen = 1, 0
    fileobj.seek(0)
    while True:
        data = fileobj.read(block if limit is None else min(block, limit - seen))
        seen += len(data)
        partial = limit is not None and seen >= limit and data
        try:
            decoder.decode(data, final=not data and not partial)
        except UnicodeDecodeError as e:
            _refuse_not_utf8(line + data[: max(e.start, 0)].count(b"\n"))
        if not data or partial:
            break
        line += data.count(b"\n")
    fileobj.seek(0)


def read_header(reader) -> list[str]:
    """Map the header row to column names (known names, else attribute names); refuse bad headers."""
    try:
        raw = next(reader)
    except StopIteration:
        raw = None
    if raw is None or not any(c.strip() for c in raw):
        raise FileRefused(_("The file is empty: it needs a header row (with an “email” column) and rows. Nothing was imported."))
    columns = []
    for i, cell in enumerate(raw, start=1):
        name = cell.strip().lower().replace(" ", "_")
        name = HEADER_ALIASES.get(name, name)
        if name not in KNOWN:
            name = attribute_name(cell)
        if not name:
            raise FileRefused(
                _("Column %(n)d of the header has no name: name every column, then import the file again. Nothing was imported.")
                % {"n": i}
            )
        if name in columns:
            raise FileRefused(
                _("The header names the column “%(name)s” twice: keep one, then import the file again. Nothing was imported.")
                % {"name": name}
            )
        columns.append(name)
    if "email" not in columns:
        raise FileRefused(
            _(
                "The file has no “email” column: profiles are matched by email address. Add a column named "
                "email to the header (found: %(found)s). Nothing was imported."
            )
            % {"found": ", ".join(columns)}
        )
    return columns


def open_csv(binary):
    """A csv.reader over a binary file (BOM tolerated), and the text wrapper under it."""
    sample = binary.read(64 * 1024)
    binary.seek(0)
    lines = sample.decode("utf-8-sig", errors="ignore").splitlines()
    text = codecs.getreader("utf-8-sig")(binary, errors="strict")
    return csv.reader(text, delimiter=_sniff_delimiter(lines[0] if lines else ""), strict=False)


def _sniff_delimiter(header_line: str) -> str:
    """Comma unless the header clearly uses ; tab or | (spreadsheets in some locales use ;)."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts[","] else ","


def preflight(binary) -> list[str]:
    """Quick checks made at upload time on the first 64 KB (the whole of a small file): empty,
    not UTF-8, header without an email column. Raise FileRefused."""
    binary.seek(0)
    head = binary.read(64 * 1024)
    binary.seek(0)
    if not head.lstrip(codecs.BOM_UTF8).strip():
        raise FileRefused(_("The file is empty: it needs a header row (with an “email” column) and rows. Nothing was imported."))
    check_utf8(binary, limit=64 * 1024)
    first = head.decode("utf-8-sig", errors="ignore").splitlines()[0]
    delimiter = _sniff_delimiter(first)
    return read_header(csv.reader(io.StringIO(first), delimiter=delimiter))


# --- rows --------------------------------------------------------------------------------------


@dataclass
class ChunkResult:
    read: int = 0
    rejected: int = 0
    rejections: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)  # email_key -> merged row dict
    merged: int = 0


def validate_row(columns: list[str], values: list[str], line: int, problems: list) -> dict | None:
    """A cleaned row dict, or None (its problems appended as (line, column, value, reason))."""
    if len(values) != len(columns):
        problems.append(
            (line, "", ",".join(values)[:200],
             _("The row has %(n)d values but the header has %(m)d columns.") % {"n": len(values), "m": len(columns)})
        )
        return None
    row = {"attributes": {}}
    ok = True
    for name, raw in zip(columns, values, strict=True):
        value = raw.strip()
        if name == "email":
            if not value:
                problems.append((line, "email", "", _("The email address is missing.")))
                ok = False
            elif not is_valid_email(value):
                problems.append((line, "email", value[:200], _("“%(v)s” is not a valid email address.") % {"v": value[:100]}))
                ok = False
            else:
                row["email"] = normalize_email(value)
        elif name == "phone":
            if value:
                phone = normalize_phone(value)
                if not _E164.match(phone):
                    problems.append((line, "phone", value[:200], _("“%(v)s” is not a phone number in international format, e.g. +33612345678.") % {"v": value[:100]}))
                    ok = False
                value = phone
            row["phone"] = value
        elif name == "time_zone":
            if value and value not in time_zones():
                problems.append((line, "time_zone", value[:200], _("“%(v)s” is not a time zone name: use an IANA name such as Europe/Paris.") % {"v": value[:100]}))
                ok = False
            row["time_zone"] = value
        elif name == "language":
            if value and not _LANGUAGE.match(value):
                problems.append((line, "language", value[:200], _("“%(v)s” is not a language code such as fr or en-GB.") % {"v": value[:100]}))
                ok = False
            row["language"] = value
        elif name in MAX_LEN:
            if len(value) > MAX_LEN[name]:
                problems.append((line, name, value[:200], _("The value is longer than %(n)d characters.") % {"n": MAX_LEN[name]}))
                ok = False
            row[name] = value
        elif value:
            row["attributes"][name] = value
    return row if ok else None


def merge_into(target: dict, row: dict) -> None:
    """Merge a later row into an earlier one for the same address: non-empty values win."""
    for key, value in row.items():
        if key == "attributes":
            target["attributes"].update(value)
        elif value:
            target[key] = value


def iter_chunks(reader, columns: list[str], *, chunk_rows: int = CHUNK_ROWS):
    """Yield ChunkResult per chunk of data rows (blank lines are passed over, not counted)."""
    chunk = ChunkResult()
    for values in reader:
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        chunk.read += 1
        problems: list = []
        row = validate_row(columns, values, reader.line_num, problems)
        if row is None:
            chunk.rejected += 1
            chunk.rejections.extend(problems)
        else:
            key = row["email"].lower()
            if key in chunk.rows:
                merge_into(chunk.rows[key], row)
                chunk.merged += 1
            else:
                chunk.rows[key] = row
        if chunk.read >= chunk_rows:
            yield chunk
            chunk = ChunkResult()
    if chunk.read:
        yield chunk


# --- upsert ------------------------------------------------------------------------------------


def upsert_chunk(*, rows: dict, audience_id: int | None, started_at) -> tuple[int, int, int]:
    """Upsert one chunk's merged rows; returns (created, updated, merged_with_earlier_chunks)."""
    if not rows:
        return 0, 0, 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            counts = _upsert_postgresql(rows, started_at)
        else:
            counts = _upsert_portable(rows, started_at)
        if audience_id:
            _add_members(rows, audience_id)
    return counts


_STAGE = "audiences_import_stage"


def _upsert_postgresql(rows: dict, started_at) -> tuple[int, int, int]:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (email text, email_key text, phone text, first_name text, "
            "last_name text, language text, time_zone text, attributes jsonb) ON COMMIT DELETE ROWS"
        )
        dumps = json.dumps
        with cursor.cursor.copy(f"COPY {_STAGE} ({', '.join(PROFILE_COLUMNS)}) FROM STDIN") as copy:
            for key, row in rows.items():
                copy.write_row((row["email"], key, row.get("phone", ""), row.get("first_name", ""),
                                row.get("last_name", ""), row.get("language", ""), row.get("time_zone", ""),
                                dumps(row["attributes"], ensure_ascii=False)))

        def keep(col):  # a non-empty cell overwrites; an empty one keeps the stored value
            return f"COALESCE(NULLIF(EXCLUDED.{col}, ''), p.{col})"

        kept = ("phone", "first_name", "last_name", "language", "time_zone")
        cursor.execute(
            f"""
            WITH up AS (
              INSERT INTO audiences_profile AS p (email, email_key, phone, first_name, last_name, language, time_zone,
                                                  attributes, email_denylisted, sms_denylisted, created_at, updated_at)
              SELECT email, email_key, phone, first_name, last_name, language, time_zone, attributes, false, false, %s, %s
              FROM {_STAGE}
              ON CONFLICT (email_key) DO UPDATE SET
                email = EXCLUDED.email,
                {", ".join(f"{c} = {keep(c)}" for c in kept)},
                attributes = p.attributes || EXCLUDED.attributes,
                updated_at = EXCLUDED.updated_at
              WHERE (p.email, {", ".join(f"p.{c}" for c in kept)}, p.attributes)
                IS DISTINCT FROM (EXCLUDED.email, {", ".join(keep(c) for c in kept)}, p.attributes || EXCLUDED.attributes)
              RETURNING (xmax = 0) AS inserted, created_at >= %s AS fresh
            )
            SELECT count(*) FILTER (WHERE inserted),
                   count(*) FILTER (WHERE NOT inserted AND NOT fresh),
                   count(*) FILTER (WHERE NOT inserted AND fresh)
            FROM up
            """,
            [now, now, started_at],
        )
        created, updated, merged_rows = cursor.fetchone()
    return created, updated, merged_rows


def _upsert_portable(rows: dict, started_at) -> tuple[int, int, int]:
    now = timezone.now()
    existing = Profile.objects.in_bulk(list(rows), field_name="email_key")
    new, changed, merged = [], [], 0
    fields = ("phone", "first_name", "last_name", "language", "time_zone")
    for key, row in rows.items():
        profile = existing.get(key)
        if profile is None:
            new.append(Profile(email=row["email"], email_key=key, phone=row.get("phone", ""),
                               first_name=row.get("first_name", ""), last_name=row.get("last_name", ""),
                               language=row.get("language", ""), time_zone=row.get("time_zone", ""),
                               attributes=row["attributes"]))
            continue
        before = (profile.email, *(getattr(profile, f) for f in fields), profile.attributes)
        profile.email = row["email"]
        for f in fields:
            if row.get(f):
                setattr(profile, f, row[f])
        profile.attributes = {**profile.attributes, **row["attributes"]}
        if (profile.email, *(getattr(profile, f) for f in fields), profile.attributes) != before:
            profile.updated_at = now
            changed.append(profile)
            if profile.created_at >= started_at:
                merged += 1
    Profile.objects.bulk_create(new, batch_size=500)
    Profile.objects.bulk_update(changed, ["email", *fields, "attributes", "updated_at"], batch_size=500)
    return len(new), len(changed) - merged, merged


def _add_members(rows: dict, audience_id: int) -> None:
    keys = list(rows)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO audiences_audiencemember (audience_id, profile_id, added_at) "
                "SELECT %s, p.id, %s FROM audiences_profile p WHERE p.email_key = ANY(%s) "
                "ON CONFLICT (audience_id, profile_id) DO NOTHING",
                [audience_id, timezone.now(), keys],
            )
        return
    for start in range(0, len(keys), 500):
        ids = Profile.objects.filter(email_key__in=keys[start : start + 500]).values_list("id", flat=True)
        AudienceMember.objects.bulk_create(
            [AudienceMember(audience_id=audience_id, profile_id=i) for i in ids], ignore_conflicts=True
        )


def save_rejections(*, job_id: int, rejections: list) -> None:
    ImportRejection.objects.bulk_create(
        [ImportRejection(job_id=job_id, line=line, column=col, value=value, reason=str(reason))
         for line, col, value, reason in rejections],
        batch_size=1000,
    )
