import pytest

from audiences.emails import email_key, normalize_email
from tests.factories import ProfileFactory


@pytest.fixture
def make_profile(db):
    def _make(email="", **fields):
        email = normalize_email(email)
        return ProfileFactory(email=email, email_key=email_key(email) or None, **fields)

    return _make


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def run_import(django_capture_on_commit_callbacks):
    """Upload bytes as a CSV and run the import task (eagerly, after commit); returns the job."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from audiences.services import import_create

    def _run(user, content: bytes, audience=None, name="people.csv"):
        with django_capture_on_commit_callbacks(execute=True):
            job = import_create(user=user, uploaded=SimpleUploadedFile(name, content, "text/csv"), audience=audience)
        job.refresh_from_db()
        return job

    return _run
