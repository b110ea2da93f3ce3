"""Link extraction and rewriting (deliveries/links.py): what preparation stores and what recipients get."""

import pytest
from jinja2.sandbox import SandboxedEnvironment

from deliveries.links import (
    LinkSpec,
    RecipientTracking,
    compile_tracked_html,
    extract_links,
    list_unsubscribe_headers,
    tracked_urls_sync,
)
from deliveries.models import Delivery, TrackedUrl
from deliveries.tokens import MIRROR, PIXEL, UNSUBSCRIBE, read_purpose_token, read_token

HTML = """<html><body>
<p>Hello {{ profile.first_name }},</p>
<a href="https://shop.example.com/sale?a=1&amp;b=2" class="btn">  Big
   <b>sale</b> </a>
<a href='https://shop.example.com/sale?a=1&amp;b=2'>Again</a>
<a href="mailto:help@example.com">Mail us</a>
<a href="tel:+33123456789">Call us</a>
<a href="#top">Top</a>
<a href="https://private.example.com/" data-no-track>Private</a>
<a href="https://example.com/u/{{ profile.id }}?lang={{ profile.language }}">Your page</a>
<a title="Our blog" href="https://blog.example.com/"></a>
<a href="https://img.example.com/"><img src="x.png" alt="Logo"></a>
<!-- <a href="https://commented.example.com/">hidden</a> -->
<a href="{{ unsubscribe_url }}">Unsubscribe</a> <a href="{{mirror_url}}">View online</a>
</body></html>"""


def test_extract_links_keeps_one_spec_per_tracked_url_with_its_label():
    specs = extract_links(HTML)
    assert specs == [
        LinkSpec("https://shop.example.com/sale?a=1&b=2", "Big sale", "click", False),
        LinkSpec("https://example.com/u/{{ profile.id }}?lang={{ profile.language }}", "Your page", "click", True),
        LinkSpec("https://blog.example.com/", "Our blog", "click", False),
        LinkSpec("https://img.example.com/", "Logo", "click", False),
    ]


def test_extract_links_of_empty_or_linkless_html():
    assert extract_links("") == []
    assert extract_links("<p>No links <a name='x'>here</a></p>") == []


def test_compile_rewrites_only_tracked_hrefs_and_adds_the_pixel_before_body_end():
    ids = {s.url: n for n, s in enumerate(extract_links(HTML), start=10)}
    out = compile_tracked_html(HTML, ids)
    assert out.count("{{ tracking.click(10) }}") == 2
    assert '<a href="{{ tracking.click(11) }}">Your page</a>' in out
    assert '<a title="Our blog" href="{{ tracking.click(12) }}"></a>' in out
    for kept in (
        'href="mailto:help@example.com"',
        'href="tel:+33123456789"',
        'href="#top"',
        'href="https://private.example.com/" data-no-track',
        '<!-- <a href="https://commented.example.com/">hidden</a> -->',
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
        '<a href="{{mirror_url}}">View online</a>',
        'class="btn">  Big\n   <b>sale</b> </a>',
    ):
        assert kept in out
    assert out.endswith(
        '<img src="{{ tracking.open_url }}" width="1" height="1" alt="" style="display:none"></body></html>'
    )
    # Nothing else changed: removing the rewrites and the pixel gives back the original.
    restored = out.replace('<img src="{{ tracking.open_url }}" width="1" height="1" alt="" style="display:none">', "")
    restored = restored.replace('"{{ tracking.click(10) }}"', '"https://shop.example.com/sale?a=1&amp;b=2"', 1)
    restored = restored.replace('"{{ tracking.click(10) }}"', "'https://shop.example.com/sale?a=1&amp;b=2'", 1)
    restored = restored.replace('"{{ tracking.click(11) }}"', '"https://example.com/u/{{ profile.id }}?lang={{ profile.language }}"')
    restored = restored.replace('"{{ tracking.click(12) }}"', '"https://blog.example.com/"')
    restored = restored.replace('"{{ tracking.click(13) }}"', '"https://img.example.com/"')
    assert restored == HTML


def test_compile_without_body_appends_the_pixel():
    out = compile_tracked_html('<a href="https://a.example/">A</a>', {"https://a.example/": 1})
    assert out == '<a href="{{ tracking.click(1) }}">A</a><img src="{{ tracking.open_url }}" width="1" height="1" alt="" style="display:none">'


def test_compile_handles_unquoted_hrefs_and_jinja_with_angle_brackets():
    html = '<a href=https://a.example/x>A</a><a href="https://b.example/?n={{ 1 if x > 2 else 0 }}">B</a>'
    specs = extract_links(html)
    assert [s.url for s in specs] == ["https://a.example/x", "https://b.example/?n={{ 1 if x > 2 else 0 }}"]
    out = compile_tracked_html(html, {s.url: i for i, s in enumerate(specs, 1)})
    assert out.startswith('<a href="{{ tracking.click(1) }}">A</a><a href="{{ tracking.click(2) }}">B</a>')


@pytest.mark.django_db
def test_rendered_copy_carries_signed_tracking_urls(settings):
    settings.SITE_URL = "https://dispatch.example.org"
    ids = {s.url: n for n, s in enumerate(extract_links(HTML), start=10)}
    template = SandboxedEnvironment(autoescape=True).from_string(compile_tracked_html(HTML, ids))
    tracking = RecipientTracking(42)
    html = template.render(
        profile={"first_name": "Ann", "id": 7, "language": "fr"},
        tracking=tracking,
        unsubscribe_url=tracking.unsubscribe_url,
        mirror_url=tracking.mirror_url,
    )
    assert tracking.click(10).startswith("https://dispatch.example.org/t/c/")
    assert read_token(tracking.click(10).rsplit("/", 1)[1]) == (42, 10)
    assert f'href="{tracking.click(10)}"' in html
    assert f'href="{tracking.unsubscribe_url}"' in html
    assert f'href="{tracking.mirror_url}"' in html
    assert f'<img src="{tracking.open_url}"' in html
    assert tracking.open_url.endswith(".gif")
    assert read_purpose_token(tracking.open_url.rsplit("/", 1)[1].removesuffix(".gif"), PIXEL) == 42
    assert read_purpose_token(tracking.unsubscribe_url.rsplit("/", 1)[1], UNSUBSCRIBE) == 42
    assert read_purpose_token(tracking.mirror_url.rsplit("/", 1)[1], MIRROR) == 42
    assert "https://shop.example.com" not in html  # every tracked target goes through the redirect


def test_list_unsubscribe_headers(settings):
    settings.SITE_URL = "https://dispatch.example.org"
    settings.UNSUBSCRIBE_MAILTO = ""
    headers = list_unsubscribe_headers(5)
    token = headers["List-Unsubscribe"].removeprefix("<https://dispatch.example.org/t/u/").removesuffix(">")
    assert read_purpose_token(token, UNSUBSCRIBE) == 5
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    settings.UNSUBSCRIBE_MAILTO = "unsubscribe@dispatch.example.org"
    value = list_unsubscribe_headers(5)["List-Unsubscribe"]
    assert value == f"<https://dispatch.example.org/t/u/{token}>, <mailto:unsubscribe@dispatch.example.org?subject=unsubscribe%20{token}>"


@pytest.mark.django_db
def test_tracked_urls_sync_replaces_the_rows_and_returns_their_ids():
    delivery = Delivery.objects.create(label="Sale", html=HTML)
    TrackedUrl.objects.create(delivery=delivery, url="https://old.example/", label="Old")
    ids = tracked_urls_sync(delivery=delivery)
    rows = list(TrackedUrl.objects.filter(delivery=delivery).values_list("url", "label", "kind", "is_template"))
    assert rows == [
        ("https://shop.example.com/sale?a=1&b=2", "Big sale", "click", False),
        ("https://example.com/u/{{ profile.id }}?lang={{ profile.language }}", "Your page", "click", True),
        ("https://blog.example.com/", "Our blog", "click", False),
        ("https://img.example.com/", "Logo", "click", False),
        ("{{ unsubscribe_url }}", "Unsubscribe", "optout", True),
        ("{{ mirror_url }}", "View online", "mirror", True),
    ]
    assert ids == dict(TrackedUrl.objects.filter(delivery=delivery).values_list("url", "id"))
    out = compile_tracked_html(HTML, ids)
    assert '<a href="{{ unsubscribe_url }}">Unsubscribe</a>' in out  # placeholders stay placeholders


def test_links_that_could_not_be_followed_safely_are_left_untracked():
    html = (
        '<a href="https://{{ attributes.host }}/x">dynamic host</a>'
        '<a href="https://example.com{{ attributes.rest }}">host may change</a>'
        '<a href="{{ attributes.portal_url }}">all personalized</a>'
        '<a href="/relative/path">relative</a><a href="javascript:alert(1)">js</a><a href="ftp://files.example.com/">ftp</a>'
        '<a href="https://example.com/u/{{ attributes.id }}">personalized path</a>'
    )
    assert [s.url for s in extract_links(html)] == ["https://example.com/u/{{ attributes.id }}"]
    out = compile_tracked_html(html, {"https://example.com/u/{{ attributes.id }}": 5})
    assert out.count("tracking.click(") == 1
    assert 'href="https://{{ attributes.host }}/x"' in out and 'href="{{ attributes.portal_url }}"' in out
