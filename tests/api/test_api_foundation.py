import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import RoleAuditLog
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def token_for(api, username):
    response = api.post("/api/auth/token/", {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def test_token_endpoint_gives_a_token_that_authenticates(api, marketer):
    token = token_for(api, "marketer")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = api.get("/api/me/").json()
    assert me["username"] == "marketer"
    assert me["groups"] == ["Standard users"]
    assert {r["perm"] for r in me["roles"]} == {
        "accounts.prepare_delivery",
        "accounts.start_delivery",
        "accounts.generic_import",
    }


def test_wrong_password_on_the_token_endpoint_is_401_in_the_error_shape(api, marketer):
    response = api.post("/api/auth/token/", {"username": "marketer", "password": "bad"}, format="json")
    assert response.status_code == 401
    assert response.json() == {"detail": "The login or password is wrong.", "code": "authentication_failed"}


def test_missing_token_is_401_in_the_error_shape(api):
    response = api.get("/api/me/")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"detail", "code"} and body["code"] == "not_authenticated"
    assert "POST /api/auth/token/" in body["detail"]
    assert response["WWW-Authenticate"].startswith("Token")


def test_only_administration_lists_users_or_changes_groups(api, marketer, preparer):
    api.force_authenticate(marketer)
    assert api.get("/api/users/").status_code == 403
    response = api.put(f"/api/users/{preparer.pk}/groups/", {"groups": ["Administrators"]}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "Administration" in response.json()["detail"]
    assert list(preparer.groups.values_list("name", flat=True)) == ["Preparers"]


def test_admin_changes_groups_through_the_api_and_it_is_audited(api, admin, preparer):
    api.force_authenticate(admin)
    response = api.put(f"/api/users/{preparer.pk}/groups/", {"groups": ["Standard users"]}, format="json")
    assert response.status_code == 200
    assert response.json()["groups"] == ["Standard users"]
    assert "accounts.start_delivery" in response.json()["roles"]
    assert RoleAuditLog.objects.get(user=preparer).source == "api"
    users = api.get("/api/users/").json()["results"]
    assert {u["username"] for u in users} == {"admin", "preparer"}


def test_unknown_group_is_400_naming_it(api, admin, preparer):
    api.force_authenticate(admin)
    response = api.put(f"/api/users/{preparer.pk}/groups/", {"groups": ["Standard users", "Wizards"]}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unknown_group"
    assert body["detail"].startswith("Unknown group: Wizards.")
    assert list(preparer.groups.values_list("name", flat=True)) == ["Preparers"]


def test_last_administrator_refused_through_the_api_with_409(api, admin):
    api.force_authenticate(admin)
    response = api.put(f"/api/users/{admin.pk}/groups/", {"groups": []}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "last_administrator"


def test_malformed_body_is_400_with_a_sentence(api, admin, preparer):
    api.force_authenticate(admin)
    response = api.put(f"/api/users/{preparer.pk}/groups/", {"groups": "Preparers"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("groups: ")


def test_openapi_schema_validates(capsys):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_interactive_docs_are_served_locally(client, marketer):
    client.force_login(marketer)
    html = client.get("/api/docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in html
    assert "cdn" not in html.lower()
