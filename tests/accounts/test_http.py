from django.test import RequestFactory

from accounts.http import safe_next


def test_next_urls_stay_on_this_site():
    rf = RequestFactory()
    assert safe_next(rf.post("/x", {"next": "/deliveries/3/"}), "/home/") == "/deliveries/3/"
    for evil in ("https://evil.example/", "//evil.example/path", "javascript:alert(1)", "https:evil.example"):
        assert safe_next(rf.post("/x", {"next": evil}), "/home/") == "/home/", evil
    assert safe_next(rf.post("/x"), "/home/") == "/home/"
