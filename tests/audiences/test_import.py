"""CSV import: good rows, each kind of bad row, duplicates, idempotence, whole-file refusals."""

import pytest
from django.db import connection

from accounts.errors import InvalidInput
from audiences.models import Audience, ImportJob, Profile

GOOD = (
    b"email,first_name,last_name,phone,language,time_zone,Loyalty tier\n"
    b"Ann.Lee@Example.COM,Ann,Lee,+33 6 12 34 56 78,fr,Europe/Paris,gold\n"
    b"bob@example.org,Bob,Martin,,en,Europe/London,\n"
)


@pytest.fixture
def audience(db, marketer):
    return Audience.objects.create(name="Newsletter", kind=Audience.Kind.LIST)


def test_good_rows_land_with_normalized_values_attributes_and_membership(marketer, audience, run_import):
    job = run_import(marketer, GOOD, audience)
    assert job.status == ImportJob.Status.DONE
    assert (job.rows_read, job.created_count, job.updated_count, job.rejected_count) == (2, 2, 0, 0)
    ann = Profile.objects.get(email_key="ann.lee@example.com")
    assert ann.email == "Ann.Lee@example.com"  # local part kept, domain lower-cased
    assert (ann.phone, ann.language, ann.time_zone) == ("+33612345678", "fr", "Europe/Paris")
    assert ann.attributes == {"loyalty_tier": "gold"}
    assert Profile.objects.get(email_key="bob@example.org").attributes == {}  # empty cells set nothing
    assert set(audience.members.values_list("email_key", flat=True)) == {"ann.lee@example.com", "bob@example.org"}
    assert not job.file  # the upload is not kept


def test_each_kind_of_bad_row_is_skipped_and_reported_and_every_valid_row_lands(marketer, run_import):
    content = (
        b"email,phone,time_zone,language\n"
        b"good@example.com,+14155550100,America/New_York,en\n"      # line 2
        b"not-an-address,,,\n"                                      # 3 email syntax
        b",+33612345678,,\n"                                        # 4 email missing
        b"c@example.com,12345,,\n"                                  # 5 phone
        b"d@example.com,,Mars/Olympus,\n"                           # 6 time zone
        b"e@example.com,,\n"                                        # 7 column count
        b"f@example.com,,,english!\n"                               # 8 language
        b"g@example.com,,Europe/Berlin,de\n"                        # 9 good
    )
    job = run_import(marketer, content)
    assert (job.rows_read, job.created_count, job.rejected_count) == (8, 2, 6)
    report = [(r.line, r.column, r.reason) for r in job.rejections.all()]
    assert [(line, col) for line, col, _r in report] == [
        (3, "email"), (4, "email"), (5, "phone"), (6, "time_zone"), (7, ""), (8, "language")
    ]
    assert "not a valid email address" in report[0][2]
    assert "3 values but the header has 4 columns" in report[4][2]
    assert set(Profile.objects.values_list("email_key", flat=True)) == {"good@example.com", "g@example.com"}


def test_an_unclosed_quote_is_named_with_the_lines_it_swallowed(marketer, run_import):
    content = (
        b"email,first_name\n"
        b"a@example.com,Ann\n"             # line 2
        b'"b@example.com,Bob\n'            # 3: the quote is never closed...
        b"c@example.com,Cy\n"              # 4 ...so this line is read into the same value
        b'd@example.com,"Di, ""the"" one"\n'  # 5: quotes done right
    )
    job = run_import(marketer, content)
    [rejection] = job.rejections.all()
    assert rejection.line == 3
    assert rejection.reason.startswith("A quote opened on line 3 is not closed where the value ends: lines 3 to 5 were read as one row.")
    assert set(Profile.objects.values_list("email_key", "first_name")) == {("a@example.com", "Ann")}


def test_a_value_quoted_over_several_lines_is_one_value(marketer, run_import):
    job = run_import(marketer, b'email,address\nann@example.com,"1 Main St\nSpringfield"\nbob@example.com,\n')
    assert (job.created_count, job.rejected_count) == (2, 0)
    assert Profile.objects.get(email_key="ann@example.com").attributes == {"address": "1 Main St\nSpringfield"}


def test_duplicates_inside_the_file_are_merged_case_insensitively(marketer, run_import):
    content = b"email,first_name,city\nJane@example.com,Jane,\njane@EXAMPLE.com,,Paris\n"
    job = run_import(marketer, content)
    assert (job.rows_read, job.created_count, job.merged_count) == (2, 1, 1)
    jane = Profile.objects.get()
    assert (jane.email, jane.first_name, jane.attributes) == ("jane@example.com", "Jane", {"city": "Paris"})


def test_duplicates_across_chunks_are_merged_too(marketer, run_import, monkeypatch):
    from audiences import imports

    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)
    content = b"email,first_name,tier\na@example.com,Ann,\nb@example.com,Bob,\nA@example.com,Annie,gold\n"
    job = run_import(marketer, content)
    assert (job.rows_read, job.created_count, job.updated_count, job.merged_count) == (3, 2, 0, 1)
    a = Profile.objects.get(email_key="a@example.com")
    assert (a.email, a.first_name, a.attributes) == ("A@example.com", "Annie", {"tier": "gold"})
    if connection.vendor == "postgresql":  # every duplicate is merged before writing: a re-import writes nothing
        again = run_import(marketer, content)
        assert (again.created_count, again.updated_count) == (0, 0)


def test_importing_the_same_file_again_changes_nothing(marketer, audience, run_import):
    run_import(marketer, GOOD, audience)
    before = list(Profile.objects.order_by("id").values())
    again = run_import(marketer, GOOD, audience)
    assert (again.rows_read, again.created_count, again.updated_count, again.unchanged_count) == (2, 0, 0, 2)
    assert list(Profile.objects.order_by("id").values()) == before
    assert audience.members.count() == 2


def test_a_later_file_updates_only_what_it_fills(marketer, run_import):
    run_import(marketer, GOOD)
    job = run_import(marketer, b"email,first_name,last_name,Loyalty tier,vip\nann.lee@example.com,Annie,,silver,yes\n")
    assert (job.created_count, job.updated_count) == (0, 1)
    ann = Profile.objects.get(email_key="ann.lee@example.com")
    assert (ann.first_name, ann.last_name, ann.attributes) == ("Annie", "Lee", {"loyalty_tier": "silver", "vip": "yes"})


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "The file is empty"),
        (b"\xef\xbb\xbf  \n", "The file is empty"),
        (b"name,phone\nAnn,+33612345678\n", "no “email” column"),
        ("email,first_name\nzoe@example.com,Zoé\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_whole_file_refusals_at_upload_import_nothing(marketer, run_import, content, message):
    with pytest.raises(InvalidInput, match=message):
        run_import(marketer, content)
    assert not Profile.objects.exists()
    assert not ImportJob.objects.exists()


def test_a_file_that_is_not_utf8_further_down_is_refused_by_the_task_and_imports_nothing(marketer, run_import):
    rows = "".join(f"user{i}@example.com,Name\n" for i in range(4000))  # past the 64 KB checked at upload
    content = ("email,first_name\n" + rows).encode() + "late@example.com,Zoé\n".encode("latin-1")
    job = run_import(marketer, content)
    assert job.status == ImportJob.Status.REFUSED
    assert "not UTF-8" in job.message and "line 4002" in job.message
    assert not Profile.objects.exists()


def test_a_header_without_rows_is_refused(marketer, run_import):
    job = run_import(marketer, b"email,first_name\n")
    assert job.status == ImportJob.Status.REFUSED
    assert "no rows" in job.message


def test_semicolon_separated_files_with_a_bom_are_read(marketer, run_import):
    job = run_import(marketer, "\ufeffEmail;First name\nzoe@example.com;Zoé\n".encode())
    assert (job.status, job.created_count) == (ImportJob.Status.DONE, 1)
    assert Profile.objects.get().first_name == "Zoé"


def test_values_with_quotes_tabs_backslashes_and_new_lines_arrive_intact(marketer, run_import):
    note = 'She said "hi"\tthen left\\back\nnext line'
    content = ('email,note\nq@example.com,"' + note.replace('"', '""') + '"\n').encode()
    job = run_import(marketer, content)
    assert job.created_count == 1
    assert Profile.objects.get().attributes == {"note": note}


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_partitions_are_merged_on_several_connections(marketer, settings, tmp_path):
    """A worker runs imports outside any transaction: on PostgreSQL the staging tables are shared
    and merged by IMPORT_MERGE_CONNECTIONS connections; the result is the same."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from audiences.services import import_create

    settings.IMPORT_MERGE_CONNECTIONS = 2
    audience = Audience.objects.create(name="Big", kind=Audience.Kind.LIST)
    rows = "".join(f"user{i}@example.com,Name{i},{'gold' if i % 2 else ''}\n" for i in range(300))
    content = ("email,first_name,tier\n" + rows + "USER7@example.com,Seven,\n").encode()
    job = import_create(user=marketer, uploaded=SimpleUploadedFile("big.csv", content), audience=audience)  # runs on commit
    job.refresh_from_db()
    assert (job.status, job.rows_read, job.created_count, job.merged_count) == (ImportJob.Status.DONE, 301, 300, 1)
    assert audience.members.count() == 300
    assert Profile.objects.get(email_key="user7@example.com").first_name == "Seven"
    again = import_create(user=marketer, uploaded=SimpleUploadedFile("big.csv", content), audience=audience)
    again.refresh_from_db()
    assert (again.created_count, again.updated_count) == (0, 0)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_tables WHERE tablename ~ '^audiences_import_[0-9]+_[0-9]+$'")
            assert cursor.fetchone()[0] == 0  # staging tables dropped


def test_an_import_whose_worker_died_is_marked_failed_after_six_hours(marketer):
    from datetime import timedelta

    from django.utils import timezone

    from audiences.services import import_reap

    job = ImportJob.objects.create(file_name="x.csv", status=ImportJob.Status.RUNNING, created_by=marketer,
                                   started_at=timezone.now() - timedelta(hours=5))
    assert import_reap() == 0
    assert import_reap(now=timezone.now() + timedelta(hours=2)) == 1
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED and "Import the file again" in job.message


def test_a_profile_without_an_address_is_named_by_its_name(db):
    assert str(Profile(pk=8, first_name="Zoé", last_name="Martin")) == "Zoé Martin"
    assert str(Profile(pk=8)) == "Profile 8"
    assert str(Profile(pk=8, email="zoe@example.com", first_name="Zoé")) == "zoe@example.com"


def test_the_reaper_drops_what_a_dead_import_left_in_the_database(postgres_only, marketer):
    from datetime import timedelta

    from django.utils import timezone

    from audiences import imports
    from audiences.services import import_reap

    job = ImportJob.objects.create(file_name="x.csv", status=ImportJob.Status.RUNNING, created_by=marketer,
                                   started_at=timezone.now() - timedelta(hours=7))
    imports.PostgresStage(columns=["email", "first_name"], name=f"audiences_import_{job.pk}", raws=2, shared=True)

    def left() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s UNION ALL "
                "SELECT sequencename FROM pg_sequences WHERE sequencename LIKE %s",
                [f"audiences_import_{job.pk}_%", f"audiences_import_{job.pk}_%"],
            )
            return [name for (name,) in cursor.fetchall()]

    assert len(left()) == 8 + 1 + 2 + 1  # partitions, the clean table, 2 raw tables, the line sequence
    assert import_reap() == 1
    assert left() == []
