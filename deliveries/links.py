"""Tracked links: find the links of a message, store them, and rewrite them for sending.

Preparation calls `tracked_urls_sync` (one tracked URL per distinct link target); the sender calls
`compile_tracked_html` once per delivery and renders the result per recipient with a
`RecipientTracking` in the Jinja context as `tracking` (plus `unsubscribe_url` and `mirror_url`).

The HTML is scanned with one regular expression that understands quoted attribute values (so a
Jinja expression inside an href, even one holding `>`, stays inside its attribute), skips HTML
comments, and touches nothing but the href values it rewrites and the open pixel it adds.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from . import tokens
from .models import TrackedUrl
from .tokens import make_token

OPTOUT_PLACEHOLDER = "{{ unsubscribe_url }}"
MIRROR_PLACEHOLDER = "{{ mirror_url }}"
PIXEL = '<img src="{{ tracking.open_url }}" width="1" height="1" alt="" style="display:none">'
LABEL_MAX = 500  # TrackedUrl.label max_length

_ATTR_VALUE = r"""(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+)"""
# One token of the scan: a comment, an <a ...> start tag, an </a> end tag, or an <img ...> tag.
_TOKEN_RE = re.compile(
    r"""<!--.*?-->"""
    r"""|<(?P<a>a)(?=[\s>/])(?P<a_attrs>(?:[^>"']|"[^"]*"|'[^']*')*)>"""
    r"""|</a\s*>"""
    r"""|<img(?=[\s>/])(?P<img_attrs>(?:[^>"']|"[^"]*"|'[^']*')*)>""",
    re.IGNORECASE | re.DOTALL,
)
_ATTR_RE = re.compile(
    r"""(?P<name>[^\s"'>/=]+)(?:\s*=\s*(?P<value>""" + _ATTR_VALUE + r"""))?""",
    re.DOTALL,
)
_TAG_RE = re.compile(r"<[^>]*>", re.DOTALL)
_SPACE_RE = re.compile(r"\s+")
_PLACEHOLDER_RE = re.compile(r"^\{\{\s*(unsubscribe_url|mirror_url)\s*\}\}$")
_TEMPLATE_RE = re.compile(r"\{\{|\{%")
_BODY_END_RE = re.compile(r"</body\s*>", re.IGNORECASE)
_SKIPPED_PREFIXES = ("mailto:", "tel:", "sms:", "javascript:", "data:", "#")


@dataclass(frozen=True)
class LinkSpec:
    url: str
    label: str
    kind: str  # TrackedUrl.Kind value: "click" | "optout" | "mirror"
    is_template: bool  # the URL holds Jinja personalization ({{ ... }} / {% ... %})


@dataclass
class _Attr:
    name: str  # lower-cased
    value: str | None  # unescaped, unquoted; None when the attribute has no value
    start: int  # span of the raw value (quotes included) inside the attribute text
    end: int


def _attrs(text: str) -> dict[str, _Attr]:
    found: dict[str, _Attr] = {}
    for m in _ATTR_RE.finditer(text):
        name = m.group("name").lower()
        if name in found:  # HTML keeps the first occurrence
            continue
        raw = m.group("value")
        if raw is None:
            found[name] = _Attr(name, None, m.end(), m.end())
            continue
        value = raw[1:-1] if raw[:1] in "\"'" else raw
        found[name] = _Attr(name, html_lib.unescape(value), m.start("value"), m.end("value"))
    return found


def _clean(text: str) -> str:
    return _SPACE_RE.sub(" ", html_lib.unescape(_TAG_RE.sub(" ", text))).strip()


def _placeholder(url: str) -> str | None:
    m = _PLACEHOLDER_RE.match(url)
    return m.group(1) if m else None


def _skipped(url: str) -> bool:
    """Links left as they are: empty, anchors, mailto:/tel:/..., anything but an absolute http(s)
    URL, and personalized URLs whose scheme or host is personalized (the redirect follows a
    personalized link only when its scheme and host stay the template's, so such a link could
    never be followed: better left untracked than broken)."""
    if not url or url.lower().startswith(_SKIPPED_PREFIXES):
        return True
    parts = urlsplit(url)
    return parts.scheme.lower() not in ("http", "https") or not parts.netloc or "{" in parts.netloc


@dataclass
class _Link:
    attrs: dict[str, _Attr]
    attrs_offset: int  # where the attribute text starts in the HTML
    text_start: int  # right after the start tag
    text_end: int | None = None  # at the matching </a> (None when never closed)
    img_alt: str = ""


def _scan(html: str) -> list[_Link]:
    links: list[_Link] = []
    current: _Link | None = None
    for m in _TOKEN_RE.finditer(html):
        if m.group("a"):
            if current is not None and current.text_end is None:
                current.text_end = m.start()  # an <a> never closed ends where the next begins
            current = _Link(_attrs(m.group("a_attrs")), m.start("a_attrs"), m.end())
            links.append(current)
        elif m.group("img_attrs") is not None:
            if current is not None and current.text_end is None and not current.img_alt:
                alt = _attrs(m.group("img_attrs")).get("alt")
                current.img_alt = _clean(alt.value or "") if alt else ""
        elif m.group(0)[:2] == "</":
            if current is not None and current.text_end is None:
                current.text_end = m.start()
    if current is not None and current.text_end is None:
        current.text_end = len(html)
    return links


def _label(html: str, link: _Link) -> str:
    label = _clean(html[link.text_start : link.text_end])
    if not label:
        title = link.attrs.get("title")
        label = _clean(title.value or "") if title else ""
    return (label or link.img_alt)[:LABEL_MAX]


def _href(link: _Link) -> str | None:
    """The link's target when it is tracked (or a placeholder); None otherwise (no href, opted out, mailto:, ...)."""
    if "data-no-track" in link.attrs:
        return None
    href = link.attrs.get("href")
    if href is None or href.value is None:
        return None
    url = href.value.strip()
    return url if _placeholder(url) or not _skipped(url) else None


def extract_links(html: str) -> list[LinkSpec]:
    """Every tracked link of `html`, one spec per distinct URL, in order of first appearance.

    Left out: mailto:, tel: and other non-web schemes, anchors (#...), links with `data-no-track`,
    and the `{{ unsubscribe_url }}` / `{{ mirror_url }}` placeholders (tracked by their own
    endpoints). The label is the link text, else its title, else the alt of an image inside it;
    a later occurrence of the same URL gives the label when the first had none.
    """
    specs: dict[str, LinkSpec] = {}
    for link in _scan(html or ""):
        url = _href(link)
        if url is None or _placeholder(url):
            continue
        label = _label(html, link)
        if url not in specs or (label and not specs[url].label):
            specs[url] = LinkSpec(url=url, label=label, kind=TrackedUrl.Kind.CLICK.value, is_template=bool(_TEMPLATE_RE.search(url)))
    return list(specs.values())


def _placeholder_specs(html: str) -> list[LinkSpec]:
    """One spec for each placeholder link present (opt-out, mirror page), for the Tracked URLs list."""
    found: dict[str, LinkSpec] = {}
    for link in _scan(html or ""):
        url = _href(link)
        name = _placeholder(url) if url else None
        if name and name not in found:
            kind = TrackedUrl.Kind.OPTOUT if name == "unsubscribe_url" else TrackedUrl.Kind.MIRROR
            placeholder = OPTOUT_PLACEHOLDER if name == "unsubscribe_url" else MIRROR_PLACEHOLDER
            found[name] = LinkSpec(url=placeholder, label=_label(html, link) or str(kind.label), kind=kind.value, is_template=True)
    return list(found.values())


def tracked_urls_sync(*, delivery) -> dict[str, int]:
    """Replace the delivery's tracked URLs with the links of its HTML; return {url: tracked_url_id}.

    Besides one click row per distinct link, the opt-out and mirror-page placeholders present get
    a row of their kind (url `{{ unsubscribe_url }}` / `{{ mirror_url }}`) so the Tracked URLs list
    shows them; `compile_tracked_html` leaves those placeholders as they are.
    """
    specs = extract_links(delivery.html) + _placeholder_specs(delivery.html)
    with transaction.atomic():
        TrackedUrl.objects.filter(delivery=delivery).delete()
        rows = TrackedUrl.objects.bulk_create(
            [TrackedUrl(delivery=delivery, url=s.url, label=s.label, kind=s.kind, is_template=s.is_template) for s in specs]
        )
    if rows and rows[0].pk is None:  # backends that do not return ids from a bulk insert
        return dict(TrackedUrl.objects.filter(delivery=delivery).values_list("url", "id"))
    return {row.url: row.pk for row in rows}


def compile_tracked_html(html: str, url_ids: dict[str, int]) -> str:
    """Jinja source where every tracked href becomes `{{ tracking.click(<id>) }}`, plus the open pixel.

    Nothing else changes: links left out by `extract_links` (or whose URL is not in `url_ids`)
    keep their href byte for byte; the pixel goes before `</body>` when there is one, else at the end.
    """
    html = html or ""
    out: list[str] = []
    pos = 0
    for link in _scan(html):
        url = _href(link)
        if url is None or _placeholder(url) or url not in url_ids:
            continue
        href = link.attrs["href"]
        start, end = link.attrs_offset + href.start, link.attrs_offset + href.end
        out.append(html[pos:start])
        out.append(f'"{{{{ tracking.click({url_ids[url]:d}) }}}}"')
        pos = end
    out.append(html[pos:])
    compiled = "".join(out)
    bodies = list(_BODY_END_RE.finditer(compiled))
    if bodies:
        at = bodies[-1].start()
        return compiled[:at] + PIXEL + compiled[at:]
    return compiled + PIXEL


def _site_url() -> str:
    return settings.SITE_URL.rstrip("/")


class RecipientTracking:
    """The `tracking` object of one recipient's Jinja context: signed tracking URLs, made on demand."""

    def __init__(self, sending_log_id: int):
        self.sending_log_id = sending_log_id
        self._site = _site_url()

    def click(self, url_id: int) -> str:
        return f"{self._site}/t/c/{make_token(self.sending_log_id, int(url_id))}"

    # One token per purpose: the pixel's URL (image proxies, logs) cannot unsubscribe or show the message.
    @cached_property
    def open_url(self) -> str:
        return f"{self._site}/t/o/{make_token(self.sending_log_id, purpose=tokens.PIXEL)}.gif"

    @cached_property
    def unsubscribe_url(self) -> str:
        return f"{self._site}/t/u/{make_token(self.sending_log_id, purpose=tokens.UNSUBSCRIBE)}"

    @cached_property
    def mirror_url(self) -> str:
        return f"{self._site}/t/m/{make_token(self.sending_log_id, purpose=tokens.MIRROR)}"

    def __str__(self) -> str:
        return self.open_url


def list_unsubscribe_headers(sending_log_id: int) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers for one recipient: one-click unsubscribe by POST to our URL,
    plus a mailto: alternative when settings.UNSUBSCRIBE_MAILTO is set."""
    token = make_token(sending_log_id, purpose=tokens.UNSUBSCRIBE)
    value = f"<{_site_url()}/t/u/{token}>"
    mailto = (getattr(settings, "UNSUBSCRIBE_MAILTO", "") or "").strip()
    if mailto:
        if mailto.lower().startswith("mailto:"):
            mailto = mailto[7:]
        if "?" not in mailto:
            mailto = f"{mailto}?subject=unsubscribe%20{token}"
        value += f", <mailto:{mailto}>"
    return {"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
