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


# Rows whose values PostgreSQL judges exactly as `make_validator` does: every address and phone in
# ASCII, domains of at most 63 characters (see `ASCII_EMAIL_SQL_RE`). The others (rare: non-ASCII
# addresses or phones, longer domains, rows over several lines, rows of the wrong shape) are judged
# in Python.
ASCII_EMAIL_SQL_RE = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+(?:[A-Za-z][A-Za-z]+|xn--[A-Za-z0-9-]+)$"
)
# `_LANGUAGE` without its nested bounds, which PostgreSQL's regular expressions pay for: this shape,
# at most 3 separators, and no run of 9 letters or digits (the first part has at most 3, by the shape).
_LANGUAGE_SHAPE_SQL = r"^[A-Za-z][A-Za-z][A-Za-z]?([-_][A-Za-z0-9][A-Za-z0-9]+)*$"
_LANGUAGE_RUN_SQL = r"[A-Za-z0-9]{9}"
WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())  # what str.strip() removes
ASCII_WHITESPACE = "".join(c for c in WHITESPACE if c.isascii())
BLOCK_BYTES = 8 << 20  # bytes of the file PostgreSQL's CSV reader takes at a time


def _e164_sql(value: str) -> str:
    """`_E164` (+, a digit 1-9, 6 to 14 more digits) for an ASCII value, without a regular expression."""
    return (
        f"(left({value}, 1) = '+' AND strpos('123456789', substr({value}, 2, 1)) > 0"
        f" AND char_length({value}) BETWEEN 8 AND 16 AND btrim(substr({value}, 3), '0123456789') = '')"
    )


@dataclass
class Staged:
    """A part of the file handed to the database. Either `raw`: bytes of whole lines without a
    quote, for PostgreSQL's own CSV reader (COPY), their first line being `first_line`; or rows
    read by csv.reader: `lines` (COPY text: line number and cells) for PostgreSQL to judge, and the
    rows judged in Python (valid `rows`, refused ones with their `rejections`)."""

    raw: bytes | None = None
    first_line: int = 0
    read: int = 0
    rejected: int = 0
    rejections: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # (line, row dict) judged in Python and valid
    lines: list = field(default_factory=list)


def iter_rows_staged(reader, columns: list[str], *, line_offset: int = 0, chunk_rows: int | None = None):
    """Rows read by csv.reader, a Staged per `chunk_rows` data rows: cells trimmed and left to
    PostgreSQL, except the rows it cannot judge exactly (validated here by `make_validator`)."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    n = len(columns)
    email_i = columns.index("email")
    phone_i = columns.index("phone") if "phone" in columns else None
    validate = make_validator(columns)
    search, strip = _NEEDS_ESCAPE.search, str.strip
    chunk = Staged()
    ended = reader.line_num  # the physical line the previous row ended on
    for values in reader:
        start, ended = ended + 1, reader.line_num  # a quoted value may span lines
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        chunk.read += 1
        if ended == start and len(values) == n:
            cells = list(map(strip, values))
            email = cells[email_i]
            if email.isascii() and len(email) - email.rfind("@") <= 64 and (phone_i is None or cells[phone_i].isascii()):
                text = "\t".join(cells)
                if search(text):
                    text = "\t".join(map(_copy_text, cells))
                chunk.lines.append(f"{ended + line_offset}\t{text}\n")
                if chunk.read >= chunk_rows:
                    yield chunk
                    chunk = Staged()
                continue
        problems: list = []
        if ended > start:
            row = validate(values, start + line_offset, problems, end=ended + line_offset)
        else:
            row = validate(values, ended + line_offset, problems)
        chunk.rejections += problems
        if row is None:
            chunk.rejected += 1
        else:
            chunk.rows.append((ended + line_offset, row))
        if chunk.read >= chunk_rows:
            yield chunk
            chunk = Staged()
    if chunk.read:
        yield chunk


def _text_reader(data, delimiter: str):
    return csv.reader(data, delimiter=delimiter, strict=False)


def parse_block(block: Staged, columns: list[str], delimiter: str) -> list[Staged]:
    """A block PostgreSQL's CSV reader refused (a line of the wrong shape, a blank line…): read by
    csv.reader instead (a block holds no quote, so its rows are its lines)."""
    reader = _text_reader(io.StringIO(block.raw.decode("utf-8"), newline=""), delimiter)
    return list(iter_rows_staged(reader, columns, line_offset=block.first_line - 1, chunk_rows=1 << 30))


def iter_staged(binary, columns: list[str], delimiter: str, *, block_bytes: int | None = None, chunk_rows: int | None = None):
    """Read the file once, from the line after its header, and yield Staged parts.

    While the file holds no quote character, blocks of whole lines go to PostgreSQL's own CSV reader
    as they are (for such lines it reads what csv.reader reads; a block it refuses is read again by
    csv.reader). From the first quote on (a quoted value may hold line breaks and delimiters), or for
    a one-column file (PostgreSQL would take a blank line for a row), csv.reader reads the rest."""
    block_bytes = block_bytes or BLOCK_BYTES
    binary.seek(0)
    head = binary.read(min(block_bytes, 1 << 20))
    bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    end = head.find(b"\n", bom)
    header = head[bom:end] if end >= 0 else b""
    fast = len(columns) > 1 and end >= 0 and b'"' not in header and b"\r" not in header.rstrip(b"\r")
    position, line = (end + 1, 2) if fast else (0, 0)
    while fast:
        binary.seek(position)
        data = binary.read(block_bytes)
        if not data:
            return
        if len(data) == block_bytes:  # end the block with its last whole line
            more = b""
            while not data.endswith(b"\n") and (more := binary.read(1 << 16)):
                cut = more.find(b"\n")
                data += more if cut < 0 else more[: cut + 1]
        if b'"' in data or data.count(b"\r") != data.count(b"\r\n"):
            break  # csv.reader from here on
        if len(data) < block_bytes:  # the end of the file: blank lines after the last row are no rows
            tail = data.rstrip(b"\r\n")
            data = tail + data[len(tail):].split(b"\n", 1)[0] + b"\n" if tail else b""
            if not data:
                return
        yield Staged(raw=data, first_line=line)
        position += len(data)
        line += data.count(b"\n")
    binary.seek(position)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig" if position == 0 else "utf-8", errors="strict", newline="")
    try:
        reader = _text_reader(text, delimiter)
        offset = 0
        if position == 0:
            next(reader, None)  # the header
        else:
            offset = line - 1
        yield from iter_rows_staged(reader, columns, line_offset=offset, chunk_rows=chunk_rows)
    finally:
        text.detach()  # the file is the caller's: leave it open


def _sql_template(text: str) -> str:
    """A translated sentence as a template for PostgreSQL's format(): its value as %s."""
    return text.replace("%", "%%").replace("%%(v)s", "%s")


class PostgresStage:
    """The staging side of an import on PostgreSQL (one per import).

    `raw` tables (one per connection that judges) receive the rows PostgreSQL judges: their cells
    as read (COPY csv of the file's own bytes, or COPY text of the cells csv.reader read) and their
    line. `check_raw(k)` judges raw table k in one statement, with the rules of `make_validator`
    (the same problems, sentences and order): rejections are written with their lines, valid rows
    go to the `clean` table of their address's hash partition (so all the rows of one address meet,
    and each partition is read once), and the rows it cannot judge exactly come back to be judged
    in Python (`add` stages those, and the rows csv.reader's side judged). The clean table is
    partitioned by hash of the address (PostgreSQL routes each row, whoever writes it).
    `merge_part(i)` then merges partition i into the profiles: duplicates inside the file become
    one row (for each column the last non-empty value; attributes merged in file order), then one
    INSERT … ON CONFLICT DO UPDATE … WHERE <something changes>. Every duplicate, wherever it is in
    the file, is merged before anything is written, so importing a file twice changes nothing."""

    CLEAN_COLUMNS = "line, email, email_key, phone, first_name, last_name, language, time_zone, attributes"

    def __init__(self, *, columns: list[str] | None = None, name: str = _STAGE, parts: int = 8, raws: int = 1, shared: bool = False):
        """`shared`: UNLOGGED tables that other connections can read, so raw tables and partitions
        can be judged and merged by several connections at once (only outside a transaction: the
        tables must be committed). Otherwise TEMP tables, private to this connection. Table names
        end with a number, as the reaper expects: the clean partitions 0…parts-1, the clean table,
        the raw ones, then the sequence numbering the lines PostgreSQL reads."""
        self.parts = parts
        self.shared = shared
        self.columns = list(columns or ["email"])
        self.tables = [f"{name}_{i}" for i in range(parts)]
        self.clean = f"{name}_{parts}"  # partitioned by hash of the address: the tables above
        self.raw_tables = [f"{name}_{parts + 1 + k}" for k in range(max(1, raws))]
        self.line_sequence = f"{name}_{parts + 1 + len(self.raw_tables)}"
        self.added = 0  # raw parts handed out, to spread them over the raw tables
        kind = "UNLOGGED" if shared else "TEMP"
        with connection.cursor() as cursor:
            if not shared:
                try:  # more memory for temporary tables: only possible before the session's first one
                    with transaction.atomic():
                        cursor.execute("SET temp_buffers = '128MB'")
                except DatabaseError:
                    pass
            cursor.execute(f"DROP TABLE IF EXISTS {self.clean}")
            cursor.execute(
                f"CREATE {'TEMP ' if not shared else ''}TABLE {self.clean} (line integer, email text, email_key text, phone text, "
                "first_name text, last_name text, language text, time_zone text, attributes jsonb) PARTITION BY HASH (email_key)"
            )
            for i, table in enumerate(self.tables):
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(f"CREATE {kind} TABLE {table} PARTITION OF {self.clean} FOR VALUES WITH (MODULUS {parts}, REMAINDER {i})")
            cursor.execute(f"DROP SEQUENCE IF EXISTS {self.line_sequence}")
            cursor.execute(f"CREATE {kind} SEQUENCE {self.line_sequence}")
            raw_columns = ", ".join(f"c{i} text" for i in range(len(self.columns)))
            for raw in self.raw_tables:
                cursor.execute(f"DROP TABLE IF EXISTS {raw}")
                cursor.execute(f"CREATE {kind} TABLE {raw} (line integer DEFAULT nextval('{self.line_sequence}'), {raw_columns})")

    def _next_raw(self) -> str:
        self.added += 1
        return self.raw_tables[self.added % len(self.raw_tables)]

    def copy_block(self, block: Staged, *, delimiter: str) -> int | None:
        """COPY a block of the file's own bytes through PostgreSQL's CSV reader, its rows numbered
        from `block.first_line`; returns the rows read, or None when PostgreSQL refused the block
        (then nothing of it stays)."""
        delimiter_sql = {",": "','", ";": "';'", "\t": "E'\\t'", "|": "'|'"}[delimiter]
        columns = ", ".join(f"c{i}" for i in range(len(self.columns)))
        table = self._next_raw()
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT setval(%s::regclass, %s, false)", [self.line_sequence, block.first_line])
                # FORCE_NOT_NULL: an empty cell is '' (as csv.reader reads it), not NULL.
                copy_sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, DELIMITER {delimiter_sql}, FORCE_NOT_NULL ({columns}))"
                with cursor.cursor.copy(copy_sql) as copy:
                    copy.write(block.raw)
                return cursor.cursor.rowcount
        except (DatabaseError, connection.Database.Error):  # COPY speaks to the driver's cursor: its errors
            return None

    def add_lines(self, lines: list[str]) -> None:
        """COPY rows read by csv.reader (line number and trimmed cells, COPY text) into a raw table."""
        if not lines:
            return
        columns = ", ".join(["line", *(f"c{i}" for i in range(len(self.columns)))])
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {self._next_raw()} ({columns}) FROM STDIN") as copy:
            copy.write("".join(lines))

    def add(self, rows: list) -> None:
        """Stage rows judged in Python (valid, normalized) in the partition of their address."""
        if not rows:
            return
        dumps, search = _JSON, _NEEDS_ESCAPE.search
        lines = []
        for line, row in rows:
            get = row.get
            fields = (row["email"], row["key"], get("phone", ""), get("first_name", ""), get("last_name", ""),
                      get("language", ""), get("time_zone", ""), dumps(row["attributes"]) if row["attributes"] else "{}")
            text = "\t".join(_copy_text(f) for f in fields) if search("".join(fields)) else "\t".join(fields)
            lines.append(f"{line}\t{text}\n")
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {self.clean} ({self.CLEAN_COLUMNS}) FROM STDIN") as copy:
            copy.write("".join(lines))

    def check_sql(self, raw: str) -> tuple[str, dict]:
        """The statement that judges raw table `raw` (params included, but the job)."""
        columns = self.columns

        def cell(name: str) -> str:
            if name not in columns:
                return "''"
            c = f"c{columns.index(name)}"  # trimmed as str.strip() does (cheaply when ASCII)
            return f"CASE WHEN octet_length({c}) = char_length({c}) THEN btrim({c}, %(ascii_ws)s) ELSE btrim({c}, %(ws)s) END"

        params = {
            "ascii_ws": ASCII_WHITESPACE, "ws": WHITESPACE,
            "email_re": ASCII_EMAIL_SQL_RE, "language_shape": _LANGUAGE_SHAPE_SQL, "language_run": _LANGUAGE_RUN_SQL,
            "zones": sorted(time_zones()),
            "missing": _("The email address is missing."), "invalid": _sql_template(_("“%(v)s” is not a valid email address.")),
            "phone": _sql_template(_phone_problem("%(v)s")), "time_zone": _sql_template(_time_zone_problem("%(v)s")),
            "language": _sql_template(_language_problem("%(v)s")),
        }  # fmt: skip
        problems = {  # column -> (the condition that refuses its value, the sentence)
            "phone": (f"phone <> '' AND NOT phone_ok AND NOT {_e164_sql('phone_n')}", "format(%(phone)s, left(phone, 100))"),
            "time_zone": ("time_zone <> '' AND time_zone NOT IN (SELECT unnest(%(zones)s::text[]))", "format(%(time_zone)s, left(time_zone, 100))"),
            "language": (
                "language <> '' AND NOT (language ~ %(language_shape)s AND language !~ %(language_run)s"
                " AND char_length(language) - char_length(translate(language, '-_', '')) <= 3)",
                "format(%(language)s, left(language, 100))",
            ),
        }  # fmt: skip
        for name, limit in MAX_LEN.items():
            params[f"long_{name}"] = _length_problem(limit)
            problems[name] = (f"char_length({name}) > {int(limit)}", f"%(long_{name})s")
        present = [name for name in columns if name in problems]
        checks = "".join(f", ({problems[name][0]}) AS bad_{name}" for name in present)
        refused = "".join(f" OR bad_{name}" for name in present)
        reasons = "".join(
            f", ({columns.index(name)}, '{name}', left({name}, 200), CASE WHEN bad_{name} THEN {problems[name][1]} END)" for name in present
        )
        pairs = []
        for n, name in enumerate(name for name in columns if name not in KNOWN):
            params[f"a{n}"] = name
            pairs.append(f"%(a{n})s, NULLIF({cell(name)}, '')")
        objects = [f"jsonb_build_object({', '.join(pairs[k:k + 40])})" for k in range(0, len(pairs), 40)]
        attrs = f"jsonb_strip_nulls({' || '.join(objects)})" if objects else "'{}'::jsonb"
        raw_cells = ", ".join(f"c{i}" for i in range(len(columns)))
        sql = f"""
            WITH r AS (
              SELECT line, {cell("email")} AS email, {cell("phone")} AS phone, {cell("first_name")} AS first_name,
                     {cell("last_name")} AS last_name, {cell("language")} AS language, {cell("time_zone")} AS time_zone,
                     {attrs} AS attributes, {raw_cells}
              FROM {raw} OFFSET 0  -- a fence: each cell trimmed once per row, not once per use below
            ), r2 AS (
              SELECT r.*, NOT (octet_length(email) = char_length(email) AND octet_length(phone) = char_length(phone)
                               AND char_length(split_part(email, '@', -1)) <= 63) AS unsure,
                     {_e164_sql("phone")} AS phone_ok, lower(email) AS email_key
              FROM r OFFSET 0
            ), r3 AS (  -- a phone not in international format as written: normalized (_PHONE_STRIP, 00 -> +)
              SELECT r2.*, CASE WHEN phone_ok THEN phone ELSE regexp_replace(translate(phone, ' .-()/', ''), '^00', '+') END AS phone_n
              FROM r2
            ), v AS (
              SELECT r3.*,
                     CASE WHEN unsure THEN 0 WHEN email = '' THEN 1
                          WHEN NOT (char_length(email) <= 254 AND char_length(email) - char_length(split_part(email, '@', -1)) <= 65
                                    AND email ~ %(email_re)s) THEN 2
                          ELSE 0 END AS bad_email{checks}
              FROM r3
            ), rejected AS (
              INSERT INTO {ImportRejection._meta.db_table} (job_id, line, "column", value, reason)
              SELECT %(job)s, v.line, p.col, p.value, p.reason FROM v CROSS JOIN LATERAL (VALUES
                (-1, 'email', CASE WHEN bad_email = 2 THEN left(email, 200) ELSE '' END,
                 CASE bad_email WHEN 1 THEN %(missing)s WHEN 2 THEN format(%(invalid)s, left(email, 100)) END){reasons}
              ) AS p(pos, col, value, reason)
              WHERE NOT unsure AND (bad_email > 0{refused}) AND p.reason IS NOT NULL ORDER BY v.line, p.pos
              RETURNING line
            ), valid AS (  -- into the partition of its address
              INSERT INTO {self.clean} ({self.CLEAN_COLUMNS})
              SELECT line, substr(email, 1, strpos(email, '@')) || lower(substr(email, strpos(email, '@') + 1)), email_key,
                     CASE WHEN phone = '' THEN '' ELSE phone_n END, first_name, last_name, language, time_zone, attributes
              FROM v WHERE NOT unsure AND NOT (bad_email > 0{refused})
            )
            SELECT count(DISTINCT line), NULL::integer, {", ".join("NULL::text" for _c in columns)} FROM rejected
            UNION ALL
            SELECT NULL, line, {raw_cells} FROM v WHERE unsure
        """
        return sql, params

    def check_raw(self, k: int, *, job_id: int) -> tuple[int, list]:
        """Judge raw table k (rejections written, valid rows staged in their partition); returns the
        rows refused and the rows left to Python: (line, cells as read)."""
        sql, params = self.check_sql(self.raw_tables[k])
        params["job"] = job_id
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '128MB'; SET LOCAL jit = off")
            cursor.execute(sql, params)
            rejected, unsure = 0, []
            for count, line, *cells in cursor.fetchall():
                if line is None:
                    rejected = count
                else:
                    unsure.append((line, cells))
            if not self.shared:
                cursor.execute(f"TRUNCATE {self.raw_tables[k]}")
        return rejected, unsure

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
                    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
                           (SELECT count(*) - count(DISTINCT email_key) FROM part WHERE n > 1) FROM up
                    """
        )

    def merge_part(self, part: int, *, audience_id: int | None) -> tuple[int, int, int]:
        """Upsert one partition; returns (created, updated, rows merged into an earlier duplicate)."""
        now = timezone.now()
        table = self.tables[part]

        with transaction.atomic(), connection.cursor() as cursor:
            # JIT costs more than it saves on this statement (its row estimates are rough).
            cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
            cursor.execute(
                self.merge_sql(table),
                [now, now],
            )
            created, updated, merged = cursor.fetchone()
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
        return created, updated, merged

    def close(self) -> None:
        with connection.cursor() as cursor:
            for table in (self.clean, *self.raw_tables):  # the partitions go with their table
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(f"DROP SEQUENCE IF EXISTS {self.line_sequence}")


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
