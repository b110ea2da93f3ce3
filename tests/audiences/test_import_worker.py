"""The import runs as a Celery task on a real worker (through the configured broker)."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audiences.models import Audience, ImportJob, Profile
from audiences.services import import_create

pytestmark = pytest.mark.integration


def test_an_uploaded_csv_is_imported_by_a_real_worker(celery_worker, marketer):
    audience = Audience.objects.create(name="Worker list", kind=Audience.Kind.LIST)
    rows = "".join(f"person{i}@example.com,Person {i},Europe/Paris\n" for i in range(500))
    content = ("email,first_name,time_zone\n" + rows + "broken,Nobody,Europe/Paris\n").encode()
    job = import_create(user=marketer, uploaded=SimpleUploadedFile("people.csv", content), audience=audience)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.is_active:
            break
        time.sleep(0.2)
    assert job.status == ImportJob.Status.DONE, job.message
    assert (job.rows_read, job.created_count, job.rejected_count) == (501, 500, 1)
    assert Profile.objects.count() == 500 and audience.members.count() == 500
