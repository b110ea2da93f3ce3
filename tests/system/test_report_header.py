"""`make test` says which database the tests use: the throw-away test database, not the
development database that DATABASE_URL names (the tests never touch it)."""

from django.conf import settings

from tests.conftest import db_vendor, pytest_report_header


def test_the_header_names_the_test_database_not_the_development_one():
    line = pytest_report_header(None)[0]
    development = settings.DATABASES["default"]["NAME"]
    if db_vendor() == "sqlite3":
        test_name = settings.DATABASES["default"]["TEST"]["NAME"]
    else:
        test_name = f"test_{development}"
    assert line.startswith(f"dispatch: test database {db_vendor()} (") and "created for this run and dropped after it" in line
    assert test_name in line
    assert f"/{development})" not in line and f"({development})" not in line
