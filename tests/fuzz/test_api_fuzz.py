"""The API fuzzed with schemathesis against its own OpenAPI schema (issue 15, "Kept held by CI").

Every operation, every check schemathesis has, as an administrator and as a marketer (Standard
users), positive and negative examples, a fixed seed (DECISIONS #12) and a bounded number of
examples per operation so `make test` stays within its time budget. Zero failures allowed: a 500,
an undocumented status code, a response that does not match its schema, invalid data accepted…
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

from accounts import roles
from config.wsgi import application

SEED = 20261206
MAX_EXAMPLES = 10

# Operations whose bodies obey rules OpenAPI cannot state (another record named by id must exist,
# a name must be unused, a personalization template must compile, an address must be deliverable,
# a condition tree must make sense): for them a schema-valid body may also be refused with a 400
# and its sentence. Every other check holds for them too, and every check holds everywhere else.
BUSINESS_RULES = [
    "^/api/deliveries/$", "^/api/deliveries/{id}/$", "^/api/profiles/$", "^/api/profiles/{id}/$",
    "^/api/audiences/$", "^/api/audiences/{id}/$", "^/api/audiences/{id}/members/$",
    "^/api/categories/$", "^/api/categories/{id}/$", "^/api/users/{id}/groups/$",
]  # fmt: skip
CONFIG = f"""
seed = {SEED}

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"
# No NUL character in generated strings: every request carrying one is refused before any view
# (tests/api/test_bad_input.py), which schemathesis would read as valid data rejected.
allow-x00 = false
""" + "".join(
    f"""
[[operations]]
include-path-regex = "{path}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
"""
    for path in BUSINESS_RULES
)

schema = schemathesis.openapi.from_wsgi(
    "/api/schema/?format=json", application, config=schemathesis.config.SchemathesisConfig.from_str(CONFIG)
)
# /api/health/ answers 503 while the workers are down (they are not running here): by design, and
# covered by tests/ops/test_health.py; everything else is fuzzed.
schema = schema.exclude(path="/api/health/")


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """The app runs in this thread through its WSGI entry point: like Django's test client, keep
    the end of each request from closing the connection that holds the test's transaction."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(params=["admin", "marketer"])
def token(request, make_user):
    group = roles.ADMINISTRATORS if request.param == "admin" else roles.STANDARD_USERS
    user = make_user(f"fuzz-{request.param}", group)
    return Token.objects.create(user=user).key


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"})
