"""PostgreSQL judges the rows of an import (Python only reads the file): held here to the rules of
`make_validator` applied row by row, on rows chosen to tell them apart. Same rejections (line,
column, value, sentence, in that order), same profiles."""

import csv
import io

import pytest

from audiences import imports
from audiences.models import ImportJob, Profile

pytestmark = pytest.mark.django_db

EMAILS = [
    "plain@example.com", "UPPER.Local@Example.COM", "a@b.co", "a@b.c", "a..b@example.com", ".a@example.com",
    "a.@example.com", "a@-x.com", "a@x-.com", "a@x.com.", "a@xn--p1ai", "a@x.xn--p1ai", "a@x.XN--P1AI", "a@x.c0m",
    "a b@example.com", "a@x..com", "a@@x.com", "a@x_y.com", "x" * 65 + "@example.com", "x" * 64 + "@example2.com",
    "a@" + "b" * 64 + ".com", "a@" + "b" * 63 + ".com", "üser@example.com", "user@exämple.com", "  padded@example.com  ",
    "\ttab@example.com", "nbsp@example.com\u00a0", "a@1.2.3.4", "o'hara+tag@example.com", "no-at-sign", "",
    "x@" + "d" * 245 + ".com", "y" * 250 + "@ex.com", "{weird}|~@example.com", "back\\slash@example.com", "ünï@ÉXAMPLE.com",
]  # fmt: skip
PHONES = [
    "", "+33612345678", "+33 6 12 34 56 78", "0033612345678", "12345", "+1 (415) 555-0100", "+0123456789",
    "+1234567890123456", " +14155550100 ", "00 44 20 7946 0958", "+٣٣٦١٢٣٤٥٦٧٨", "+33\u00a0612345678", "+33.6.12/34-56-78",
    "+1234567", "+123456", "+123456789012345", "++33612345678", "+33a612345678", "0612345678",
]  # fmt: skip
ZONES = ["", "Europe/Paris", "Mars/Olympus", "UTC", "utc", " America/New_York ", "Europe/paris"]
LANGUAGES = [
    "", "fr", "en-GB", "en_us", "english!", "zh-Hant-TW", "x", "abcd", "pt-BR-x1-ab", "fr-", "de-abcdefgh", "de-abcdefghi",
    "en-aa-bb-cc-dd", "en--GB", "e1", "EN", "fr-a", "fra-123456789", "fr_CA_x9",
]
NAMES = ["", "Ann", "A" * 150, "B" * 151, " Zoé ", "tab\there", "quote\"d"]


def rows():
    for i, email in enumerate(EMAILS):
        for j in range(3):
            k = i * 3 + j
            yield [email if j == 0 else f"{k}.{email}" if "@" in email else email, PHONES[k % len(PHONES)], ZONES[k % len(ZONES)],
                   LANGUAGES[k % len(LANGUAGES)], NAMES[k % len(NAMES)], NAMES[(k + 3) % len(NAMES)],
                   f"tier {k % 4}" if k % 5 else "", "a\\b" if k % 7 == 0 else ""]  # fmt: skip


def csv_bytes(*, quotes: bool) -> bytes:
    """The corpus as a CSV file: with quoted values (csv.reader reads it) or without a quote at all
    (PostgreSQL's CSV reader reads it, but the blocks holding a blank line or a row of the wrong
    shape, which csv.reader reads again)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "phone", "time_zone", "language", "first_name", "last_name", "Loyalty tier", "note"])
    for i, row in enumerate(rows()):
        if not quotes:
            row = [cell.replace('"', "'").replace(",", ";") for cell in row]
        writer.writerow(row)
        if i == 3:
            out.write("short@example.com,+33612345678\n")  # the wrong number of values
        if i == 5:
            out.write("\n")  # a blank line is no row
    data = out.getvalue()
    assert ('"' in data) == quotes
    return data.encode()


def reference(content: bytes):
    """The rules applied row by row in Python (the portable path's validator)."""
    reader = imports.open_csv(io.BytesIO(content))
    columns = imports.read_header(reader)
    rejections, valid = [], {}
    for chunk in imports.iter_chunks(reader, columns):
        rejections += chunk.rejections
        for _line, row in chunk.rows:
            valid[row["key"]] = row
    return rejections, valid


@pytest.mark.parametrize("quotes", [True, False])
def test_postgresql_refuses_and_keeps_what_the_python_rules_do(quotes, postgres_only, marketer, run_import, monkeypatch):
    monkeypatch.setattr(imports, "BLOCK_BYTES", 1500)  # many blocks: some read by PostgreSQL, some refused by it
    copied, original = [], imports.PostgresStage.copy_block
    monkeypatch.setattr(imports.PostgresStage, "copy_block", lambda self, block, **kw: copied.append(original(self, block, **kw)) or copied[-1])
    content = csv_bytes(quotes=quotes)
    job = run_import(marketer, content)
    if quotes:
        assert copied == []  # csv.reader read it all
    else:
        assert None in copied and any(copied), copied  # PostgreSQL read blocks, and refused the odd ones
    assert job.status == ImportJob.Status.DONE
    expected_rejections, expected_rows = reference(content)
    found = [(r.line, r.column, r.value, r.reason) for r in job.rejections.order_by("line", "id")]
    assert found == [(line, column, value[:200], str(reason)) for line, column, value, reason in expected_rejections]
    assert job.rejected_count == len({line for line, *_rest in expected_rejections})
    assert job.rows_read == len(EMAILS) * 3 + 1 and job.created_count == len(expected_rows)
    profiles = {
        p.email_key: p for p in Profile.objects.all()
    }
    assert set(profiles) == set(expected_rows)
    for key, row in expected_rows.items():
        p = profiles[key]
        assert (p.email, p.phone, p.time_zone, p.language, p.first_name, p.last_name) == (
            row["email"], row.get("phone", ""), row.get("time_zone", ""), row.get("language", ""),
            row.get("first_name", ""), row.get("last_name", ""),
        ), key  # fmt: skip
        assert p.attributes == row["attributes"], key
    # both ways were used: most rows judged by PostgreSQL, the non-ASCII ones in Python
    kinds = {"ascii" if (r[0].strip().isascii() and r[1].strip().isascii()) else "other" for r in rows()}
    assert kinds == {"ascii", "other"}
