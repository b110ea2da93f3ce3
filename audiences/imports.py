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

from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .emails import is_valid_email
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
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline="")
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


def _phone_problem(value):
    return _("“%(v)s” is not a phone number in international format, e.g. +33612345678.") % {"v": value[:100]}


def _time_zone_problem(value):
    return _("“%(v)s” is not a time zone name: use an IANA name such as Europe/Paris.") % {"v": value[:100]}


def _language_problem(value):
    return _("“%(v)s” is not a language code such as fr or en-GB.") % {"v": value[:100]}


def _length_problem(limit):
    return _("The value is longer than %(n)d characters.") % {"n": limit}


_ATTRIBUTE, _PHONE, _TIME_ZONE, _LANGUAGE_KIND, _NAME = range(5)
_KIND = {"phone": _PHONE, "time_zone": _TIME_ZONE, "language": _LANGUAGE_KIND, "first_name": _NAME, "last_name": _NAME}


def make_validator(columns: list[str]):
    """A function (values, line, problems) -> cleaned row dict or None, built once per file.

    A row dict holds "email" (normalized), "key" (lower-cased), the known columns that are
    filled, and "attributes" (the filled other columns). Problems are appended as
    (line, column, value, reason). This runs once per row of files with millions of rows: it is
    written for speed (no call per cell where a comparison does)."""
    n = len(columns)
    email_i = columns.index("email")
    others = [(i, name, _KIND.get(name, _ATTRIBUTE)) for i, name in enumerate(columns) if name != "email"]
    zones = time_zones()
    e164, language = _E164.match, _LANGUAGE.match

    def validate(values, line, problems, end=None):
        # A row read over several lines whose shape is wrong, or whose address holds a line break:
        # a quote left open swallowed the lines after it (the commonest broken CSV).
        unclosed = bool(end) and any("\n" in v for v in values) and (len(values) != n or "\n" in values[email_i])
        if len(values) != n or unclosed:
            if unclosed:
                reason = _(
                    "A quote opened on line %(line)d is not closed where the value ends: lines %(line)d to %(end)d "
                    "were read as one row. Close the quote (a value holding a quote is quoted itself, its quotes "
                    "doubled) and import the file again."
                ) % {"line": line, "end": end}
            else:
                reason = _("The row has %(n)d values but the header has %(m)d columns.") % {"n": len(values), "m": n}
            problems.append((line, "", ",".join(values)[:200], reason))
            return None
        email = values[email_i].strip()
        ok = True
        if not email:
            problems.append((line, "email", "", _("The email address is missing.")))
            ok = False
        elif not is_valid_email(email):
            problems.append((line, "email", email[:200], _("“%(v)s” is not a valid email address.") % {"v": email[:100]}))
            ok = False
        else:
            local, _at, domain = email.rpartition("@")
            email = f"{local}@{domain.lower()}"
        row = {"email": email, "key": email.lower()}
        attributes = {}
        for i, name, kind in others:
            value = values[i].strip()
            if not value:
                continue  # an empty cell sets nothing
            if kind == _ATTRIBUTE:
                attributes[name] = value
                continue
            if kind == _TIME_ZONE:
                if value not in zones:
                    problems.append((line, name, value[:200], _time_zone_problem(value)))
                    ok = False
                    continue
            elif kind == _PHONE:
                if not e164(value):
                    phone = normalize_phone(value)
                    if not e164(phone):
                        problems.append((line, name, value[:200], _phone_problem(value)))
                        ok = False
                        continue
                    value = phone
            elif kind == _LANGUAGE_KIND:
                if not language(value):
                    problems.append((line, name, value[:200], _language_problem(value)))
                    ok = False
                    continue
            elif len(value) > MAX_LEN[name]:
                problems.append((line, name, value[:200], _length_problem(MAX_LEN[name])))
                ok = False
                continue
            row[name] = value
        row["attributes"] = attributes
        return row if ok else None

    return validate


def merge_into(target: dict, row: dict) -> None:
    """Merge a later row into an earlier one for the same address: non-empty values win."""
    for key, value in row.items():
        if key == "attributes":
            target["attributes"].update(value)
        elif value:
            target[key] = value


@dataclass
class Chunk:
    read: int = 0
    rejected: int = 0
    rejections: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # (line, row dict) of valid rows, in file order


def iter_chunks(reader, columns: list[str], *, chunk_rows: int | None = None):
    """Yield a Chunk per `chunk_rows` data rows (blank lines are passed over, not counted)."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    validate = make_validator(columns)
    chunk = Chunk()
    ended = reader.line_num  # the physical line the previous row ended on
    for values in reader:
        start, ended = ended + 1, reader.line_num  # a quoted value may span lines
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        chunk.read += 1
        line = reader.line_num
        row = validate(values, start, chunk.rejections, end=line) if line > start else validate(values, line, chunk.rejections)
        if row is None:
            chunk.rejected += 1
        else:
            chunk.rows.append((line, row))
        if chunk.read >= chunk_rows:
            yield chunk
            chunk = Chunk()
    if chunk.read:
        yield chunk


def save_rejections(*, job_id: int, rejections: list) -> None:
    ImportRejection.objects.bulk_create(
        [ImportRejection(job_id=job_id, line=line, column=col, value=value, reason=str(reason))
         for line, col, value, reason in rejections],
        batch_size=1000,
    )


# --- PostgreSQL: COPY every valid row into a staging table, then merge set-based ------------------

_STAGE = "audiences_import_stage"
_KEPT = ("phone", "first_name", "last_name", "language", "time_zone")


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # reused: json.dumps(…, ensure_ascii=False) builds one per call
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")


def _copy_text(value: str) -> str:
    """A value in COPY's text format (backslash, tab, newline and carriage return escaped)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class PostgresStage:
    """The staging side of an import on PostgreSQL (one per import, on one connection).

    `add(rows)` COPYs valid rows into temporary tables, one per hash partition of the addresses
    (so all the rows of one address land in the same table, and each table is read once);
    `merge_part(i)` then merges one partition into the profiles: duplicates inside the file
    become one row (for each column the last non-empty value; attributes merged in file order),
    then one INSERT … ON CONFLICT DO UPDATE … WHERE <something changes>. Every duplicate, wherever
    it is in the file, is merged before anything is written, so importing a file twice changes
    nothing."""

    def __init__(self, *, name: str = _STAGE, parts: int = 8, shared: bool = False):
        """`shared`: UNLOGGED tables that other connections can read, so partitions can be merged
        by several connections at once (only outside a transaction: the tables must be
        committed). Otherwise TEMP tables, private to this connection."""
        self.parts = parts
        self.shared = shared
        self.tables = [f"{name}_{i}" for i in range(parts)]
        with connection.cursor() as cursor:
            if not shared:
                try:  # more memory for temporary tables: only possible before the session's first one
                    with transaction.atomic():
                        cursor.execute("SET temp_buffers = '128MB'")
                except DatabaseError:
                    pass
            kind = "UNLOGGED TABLE" if shared else "TEMP TABLE"
            for table in self.tables:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(
                    f"CREATE {kind} {table} (line integer, email text, email_key text, phone text, "
                    "first_name text, last_name text, language text, time_zone text, attributes jsonb)"
                )

    def add(self, rows: list) -> None:
        dumps, parts, search = _JSON, self.parts, _NEEDS_ESCAPE.search
        buffers: list[list[str]] = [[] for _ in range(parts)]
        for line, row in rows:
            key = row["key"]
            get = row.get
            fields = (row["email"], key, get("phone", ""), get("first_name", ""), get("last_name", ""),
                      get("language", ""), get("time_zone", ""), dumps(row["attributes"]) if row["attributes"] else "{}")
            if search("".join(fields)):
                text = "\t".join(_copy_text(f) for f in fields)
            else:
                text = "\t".join(fields)
            buffers[hash(key) % parts].append(f"{line}\t{text}\n")
        columns = "line, email, email_key, phone, first_name, last_name, language, time_zone, attributes"
        with connection.cursor() as cursor:
            for table, lines in zip(self.tables, buffers, strict=True):
                if lines:
                    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        copy.write("".join(lines))

    def prepare(self) -> int:
        """Return the number of rows merged into an earlier duplicate."""
        merged = 0
        with connection.cursor() as cursor:
            for table in self.tables:
                cursor.execute(f"ANALYZE {table}")
                cursor.execute(f"SELECT count(*) - count(DISTINCT email_key) FROM {table}")
                merged += cursor.fetchone()[0]
        return merged

    @staticmethod
    def merge_sql(table: str) -> str:
        """The statement that merges one staging table into the profiles (params: now, now)."""

        def keep(col):  # a non-empty cell overwrites; an empty one keeps the stored value
            return f"COALESCE(NULLIF(EXCLUDED.{col}, ''), p.{col})"

        def last_filled(col):
            return f"COALESCE((array_agg({col} ORDER BY line DESC) FILTER (WHERE {col} <> ''))[1], '')"

        return (
            f"""
                    WITH part AS (
                      SELECT s.*, count(*) OVER (PARTITION BY email_key) AS n FROM {table} s
                    ),
                    dup_attrs AS (
                      SELECT x.email_key, jsonb_object_agg(e.key, e.value ORDER BY x.line) AS attributes
                      FROM part x CROSS JOIN LATERAL jsonb_each(x.attributes) e WHERE x.n > 1 GROUP BY x.email_key
                    ),
                    merged AS (
                      SELECT email, email_key, {", ".join(_KEPT)}, attributes FROM part WHERE n = 1
                      UNION ALL
                      SELECT d.email, d.email_key, {", ".join(f"d.{c}" for c in _KEPT)}, COALESCE(a.attributes, '{{}}'::jsonb)
                      FROM (
                        SELECT email_key, (array_agg(email ORDER BY line DESC))[1] AS email,
                               {", ".join(f"{last_filled(c)} AS {c}" for c in _KEPT)}
                        FROM part WHERE n > 1 GROUP BY email_key
                      ) d LEFT JOIN dup_attrs a USING (email_key)
                    ),
                    up AS (
                      INSERT INTO audiences_profile AS p (email, email_key, {", ".join(_KEPT)}, attributes,
                                                          email_denylisted, sms_denylisted, created_at, updated_at)
                      SELECT email, email_key, {", ".join(_KEPT)}, attributes, false, false, %s, %s FROM merged
                      ON CONFLICT (email_key) DO UPDATE SET
                        email = EXCLUDED.email,
                        {", ".join(f"{c} = {keep(c)}" for c in _KEPT)},
                        attributes = p.attributes || EXCLUDED.attributes,
                        updated_at = EXCLUDED.updated_at
                      WHERE (p.email, {", ".join(f"p.{c}" for c in _KEPT)}, p.attributes)
                        IS DISTINCT FROM (EXCLUDED.email, {", ".join(keep(c) for c in _KEPT)}, p.attributes || EXCLUDED.attributes)
                      RETURNING (xmax = 0) AS inserted
                    )
                    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
                    """
        )

    def merge_part(self, part: int, *, audience_id: int | None) -> tuple[int, int]:
        """Upsert one partition; returns (created, updated)."""
        now = timezone.now()
        table = self.tables[part]

        with transaction.atomic(), connection.cursor() as cursor:
            # JIT costs more than it saves on this statement (its row estimates are rough).
            cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
            cursor.execute(
                self.merge_sql(table),
                [now, now],
            )
            created, updated = cursor.fetchone()
            if audience_id:
                cursor.execute(
                    f"INSERT INTO audiences_audiencemember (audience_id, profile_id, added_at) "
                    f"SELECT %s, p.id, %s FROM audiences_profile p "
                    f"WHERE p.email_key IN (SELECT email_key FROM {table}) "
                    f"ON CONFLICT (audience_id, profile_id) DO NOTHING",
                    [audience_id, now],
                )
            if not self.shared:
                cursor.execute(f"TRUNCATE {table}")  # its rows are merged: free the space now
        return created, updated

    def close(self) -> None:
        with connection.cursor() as cursor:
            for table in self.tables:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")


# --- elsewhere (SQLite): chunk by chunk through the ORM -------------------------------------------


def upsert_chunk_portable(*, rows: list, audience_id: int | None, started_at) -> tuple[int, int, int]:
    """Merge a chunk's rows by address, then create / update; returns (created, updated, merged).
    Duplicates in different chunks are merged by the upsert rules themselves."""
    merged_rows: dict = {}
    merged = 0
    for _line, row in rows:
        if row["key"] in merged_rows:
            merge_into(merged_rows[row["key"]], row)
            merged += 1
        else:
            merged_rows[row["key"]] = row
    if not merged_rows:
        return 0, 0, merged
    now = timezone.now()
    with transaction.atomic():
        existing = Profile.objects.in_bulk(list(merged_rows), field_name="email_key")
        new, changed = [], []
        for key, row in merged_rows.items():
            profile = existing.get(key)
            if profile is None:
                new.append(Profile(email=row["email"], email_key=key, attributes=row["attributes"],
                                   **{c: row.get(c, "") for c in _KEPT}))
                continue
            before = (profile.email, *(getattr(profile, f) for f in _KEPT), profile.attributes)
            profile.email = row["email"]
            for f in _KEPT:
                if row.get(f):
                    setattr(profile, f, row[f])
            profile.attributes = {**profile.attributes, **row["attributes"]}
            if (profile.email, *(getattr(profile, f) for f in _KEPT), profile.attributes) != before:
                profile.updated_at = now
                changed.append(profile)
                if profile.created_at >= started_at:
                    merged += 1  # created earlier in this same import
        Profile.objects.bulk_create(new, batch_size=500)
        Profile.objects.bulk_update(changed, ["email", *_KEPT, "attributes", "updated_at"], batch_size=500)
        if audience_id:
            keys = list(merged_rows)
            for start in range(0, len(keys), 500):
                ids = Profile.objects.filter(email_key__in=keys[start : start + 500]).values_list("id", flat=True)
                AudienceMember.objects.bulk_create(
                    [AudienceMember(audience_id=audience_id, profile_id=i) for i in ids], ignore_conflicts=True
                )
    fresh_updates = sum(1 for p in changed if p.created_at >= started_at)
    return len(new), len(changed) - fresh_updates, merged
