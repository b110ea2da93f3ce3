"""Issue 15, item 8: bad input gets a 400 with a sentence, never a server error.

Before: a NUL byte in any search or filter (`?q=%00`), `\\u0000` in JSON attributes or conditions,
`[null, null]` as a quarantine update body and `?audience=abc` on the import page answered 500.
"""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from audiences.models import Profile, Quarantine

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize(
    "url",
    ["/api/profiles/?q=%00", "/api/deliveries/?q=a%00b", "/api/quarantine/?address=%00", "/api/deployments/?channel=%00"],
)
def test_a_nul_in_a_search_or_filter_of_the_api_is_a_400_with_a_sentence(admin, url):
    response = api(admin).get(url)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The request contains a NUL character (\\0), which no field accepts: remove it and try again.",
        "code": "invalid_character",
    }


@pytest.mark.parametrize("url", ["/profiles/?q=%00", "/deliveries/?q=%00", "/quarantine/?address=x%00"])
def test_a_nul_in_a_page_search_is_a_400_page(admin, url):
    client = Client(raise_request_exception=False)
    client.force_login(admin)
    response = client.get(url)
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


def test_a_nul_in_json_attributes_or_conditions_is_a_400(admin):
    client = api(admin)
    profile = client.post("/api/profiles/", {"email": "a@example.com", "attributes": {"plan": "gold\u0000"}}, format="json")
    assert profile.status_code == 400 and profile.json()["code"] == "invalid_character"
    audience = client.post(
        "/api/audiences/",
        {"name": "F", "kind": "filter", "conditions": {"op": "and", "conditions": [{"field": "email", "operator": "contains", "value": "\u0000"}]}},
        format="json",
    )
    assert audience.status_code == 400
    assert not Profile.objects.exists()


def test_a_quarantine_update_that_is_not_an_object_is_a_400(admin):
    row = Quarantine.objects.create(address="q@example.com", channel="email", status="quarantine")
    response = api(admin).patch(f"/api/quarantine/{row.pk}/", [None, None], format="json")
    assert response.status_code == 400
    assert response.json()["code"] in ("invalid", "not_a_dict", "required")
    assert response.json()["detail"].endswith(".")


def test_a_bad_audience_on_the_import_page_is_ignored(preparer):
    client = Client(raise_request_exception=False)
    client.force_login(preparer)
    assert client.get("/imports/new/?audience=abc").status_code == 200
