"""Issue 15, item 5: CSV files never hand a spreadsheet a formula.

Before: the import's rejected-rows CSV wrote `=HYPERLINK(…)`, `@SUM(…)` and `+cmd|…` as uploaded.
Every CSV the app writes now goes through one helper (accounts/csvfiles.py).
"""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.csvfiles import csv_cell

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "value, written",
    [
        ('=HYPERLINK("http://evil.example","x")', "'=HYPERLINK(\"http://evil.example\",\"x\")"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("  =1+1", "'  =1+1"),
        ("\t=1", "'\t=1"),
        ("plain text", "plain text"),
        (42, 42),
        (None, ""),
    ],
)
def test_a_cell_that_would_start_a_formula_is_neutralized(value, written):
    assert csv_cell(value) == written


def test_the_rejected_rows_csv_of_an_import_is_neutralized(client, preparer, django_capture_on_commit_callbacks):
    client.force_login(preparer)
    content = (
        b"email,phone\n"
        b'"=HYPERLINK(""http://evil.example"",""click"")",\n'
        b"@SUM(A1:A9),\n"
        b"+cmd|' /C calc'!A0,\n"
        b"ok@example.com,=1+1\n"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("audiences:import-create"), {"file": SimpleUploadedFile("p.csv", content)})
    body = b"".join(client.get(response.url + "rejected.csv").streaming_content).decode("utf-8-sig")
    values = [row[2] for row in csv.reader(io.StringIO(body))][1:]
    assert values == ["'=HYPERLINK(\"http://evil.example\",\"click\")", "'@SUM(A1:A9)", "'+cmd|' /C calc'!A0", "'=1+1"]
