"""One permission-checked fetch per kind of object (message, profile, audience, import), used by
the pages, the API and the partials of every app, with one sentence when the object is not there.

The URL configuration is walked: every route whose address names a message, a profile, an
audience or an import by its id is requested with an id that does not exist, and must answer 404
with that kind's sentence (the API's `detail`, the page's banner); and, for a user holding no
role, 403 before anything is read.
"""

import re

import pytest
from django.test import Client

from tests.test_permissions_table import routes

pytestmark = pytest.mark.django_db

MISSING = 987654
SENTENCES = {
    "deliveries": f"There is no message DM{MISSING}: it may have been deleted.",
    "profiles": f"There is no profile {MISSING}: it may have been deleted.",
    "audiences": f"There is no audience {MISSING}: it may have been deleted.",
    "imports": f"There is no import {MISSING}: check its number.",
}
KIND = re.compile(r"(?:^|/)(deliveries|profiles|audiences|imports)/\(\?P<pk>")


def object_routes():
    """(name, kind, path with the missing id, whether it is the API) for every route naming an object by its id."""
    found = []
    for name, _namespace, regex, _view in routes():
        m = KIND.search(regex)
        if not m or regex.count("(?P<") != 1 + ("(?P<action>" in regex) + ("(?P<tab>" in regex):
            continue
        path = re.sub(r"\(\?P<pk>[^)]*\)", str(MISSING), regex)
        path = re.sub(r"\(\?P<action>[^)]*\)", "pause", path)
        path = re.sub(r"\(\?P<tab>[^)]*\)", "sending", path)
        path = "/" + path.replace("\\Z", "").replace("$", "").replace("\\", "")
        found.append((name, m.group(1), path, path.startswith("/api/")))
    return found


def test_every_kind_is_reached_through_pages_api_and_partials():
    kinds = {(kind, api) for _name, kind, _path, api in object_routes()}
    assert kinds == {(k, api) for k in SENTENCES for api in (False, True)}
    assert len(object_routes()) >= 30


def test_a_missing_object_answers_its_one_sentence_everywhere(admin):
    client = Client(raise_request_exception=False)
    client.force_login(admin)
    for name, kind, path, api in object_routes():
        response = client.get(path)
        if response.status_code == 405:  # an action: POST only
            response = client.post(path)
        assert response.status_code == 404, (name, path, response.status_code)
        body = response.json()["detail"] if api else response.content.decode()
        assert SENTENCES[kind] in body, (name, path, body[:300])


def test_without_a_role_nothing_is_read(make_user):
    client = Client(raise_request_exception=False)
    client.force_login(make_user("nobody"))
    for name, _kind, path, _api in object_routes():
        response = client.get(path)
        assert response.status_code in (403, 405), (name, path, response.status_code)
