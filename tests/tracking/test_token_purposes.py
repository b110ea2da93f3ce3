"""Issue 15, item 6: one token per purpose.

Before: one token served the open pixel, the mirror page and the unsubscribe link, so anyone who
saw the pixel's URL (an image proxy, a log) could unsubscribe the person; the profile history
handed that token to every role. Mail sent before keeps working (DECISIONS #12).
"""

import re

import pytest
from django.test import Client
from django.urls import reverse

from deliveries.links import RecipientTracking, list_unsubscribe_headers
from deliveries.models import SendingStatus
from deliveries.tokens import BadToken, make_token, read_purpose_token
from tracking.models import TrackingLog

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0"


def kinds():
    return list(TrackingLog.objects.order_by("id").values_list("kind", flat=True))


def test_the_pixel_token_cannot_unsubscribe_nor_show_the_message(sent):
    pixel_token = sent.open_path().removeprefix("/t/o/").removesuffix(".gif")
    visitor = Client(HTTP_USER_AGENT=BROWSER)
    assert visitor.post(f"/t/u/{pixel_token}").status_code == 404
    assert visitor.get(f"/t/u/{pixel_token}").status_code == 404
    assert visitor.get(f"/t/m/{pixel_token}").status_code == 404
    assert not sent.refresh().profile.email_denylisted
    assert kinds() == []


def test_each_link_of_a_message_serves_its_own_purpose_only(sent):
    tracking = RecipientTracking(sent.log.pk)
    tokens = {
        "o": tracking.open_url.rsplit("/", 1)[1].removesuffix(".gif"),
        "u": tracking.unsubscribe_url.rsplit("/", 1)[1],
        "m": tracking.mirror_url.rsplit("/", 1)[1],
    }
    assert len(set(tokens.values())) == 3
    for made_for, token in tokens.items():
        for purpose in "oum":
            if purpose == made_for:
                assert read_purpose_token(token, purpose) == sent.log.pk
            else:
                with pytest.raises(BadToken):
                    read_purpose_token(token, purpose)
    header = list_unsubscribe_headers(sent.log.pk)["List-Unsubscribe"]
    assert tokens["u"] in header and tokens["o"] not in header


def test_tokens_of_mail_already_sent_keep_working_for_all_three(sent):
    old = make_token(sent.log.pk)  # the shape every message carried before
    visitor = Client(HTTP_USER_AGENT=BROWSER)
    assert visitor.get(f"/t/o/{old}.gif").status_code == 200
    assert visitor.get(f"/t/m/{old}").status_code == 200
    assert visitor.post(f"/t/u/{old}").status_code == 200
    assert sent.refresh().profile.email_denylisted
    assert kinds() == ["open", "mirror", "optout"]


def test_the_profile_history_hands_out_a_mirror_link_only(client, marketer, sent):
    sent.log.status = SendingStatus.SENT
    sent.log.save()
    client.force_login(marketer)
    html = client.get(reverse("tracking:profile-history", args=[sent.profile.pk])).content.decode()
    token = re.search(r'href="/t/m/([^"]+)"', html).group(1)
    assert read_purpose_token(token, "m") == sent.log.pk
    assert Client().post(f"/t/u/{token}").status_code == 404
    assert not sent.refresh().profile.email_denylisted


def test_mirror_pages_cannot_navigate_the_top_window(client, sent):
    """Issue 15 item 10: the mirror page's sandbox let it navigate the top window on a click."""
    policy = client.get(sent.mirror_path())["Content-Security-Policy"]
    assert policy.startswith("sandbox ") and "allow-top-navigation" not in policy and "frame-ancestors 'none'" in policy
