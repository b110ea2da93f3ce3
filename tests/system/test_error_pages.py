"""A missing page shows the app's own 404 page even with DEBUG on (the default of `make run`); a
deliberate 403 is logged once, on one line, without a traceback."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db
OWN_404 = "This page does not exist, or the link is no longer valid."


@pytest.mark.parametrize("debug", [True, False])
def test_an_address_nothing_answers_and_a_missing_object_show_the_apps_404_page(settings, marketer, debug):
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    client.force_login(marketer)
    for url in ("/nothing-here/", "/deliveries/999999/"):
        response = client.get(url)
        body = response.content.decode()
        assert response.status_code == 404 and OWN_404 in body, url
        assert "Using the URLconf" not in body and "technical" not in body.lower()
        assert "Mia Marketer" in body  # the app's layout, the person still signed in


def test_a_refused_page_is_logged_once_on_one_line(client, preparer, settings, capsys):
    """Through the logging the processes really set up: Django's defaults, then settings.LOGGING."""
    from django.utils.log import configure_logging

    settings.DEBUG = True
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)  # its handlers write to the captured stderr
    try:
        client.force_login(preparer)
        assert client.get("/deployments/").status_code == 403
        err = capsys.readouterr().err
    finally:
        with capsys.disabled():  # back to handlers on the real stderr
            configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    lines = [line for line in err.splitlines() if line.strip()]
    forbidden = [line for line in lines if "Forbidden" in line]
    assert len(forbidden) == 1, err
    assert "WARNING django.request: Forbidden (Permission denied): /deployments/" in forbidden[0]
    assert "Traceback" not in err and "PermissionDenied" not in err
