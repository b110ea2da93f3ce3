"""Message personalization with Jinja2's sandbox (deliveries/sandbox.py).

Content is written by marketers, so it is untrusted: templates see a plain dict built from the
profile (no model, no method), HTML autoescapes, and templates are compiled once per delivery
and rendered once per recipient. Every render is bounded in time and size by the sandbox
(PERSONALIZATION_TIME_LIMIT, PERSONALIZATION_MAX_CHARS), whichever path renders.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser

from django.utils.translation import gettext as _
from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes

from .sandbox import MessageEnvironment, TemplateLimitError, forbidden_tags

PROFILE_FIELDS = ("email", "phone", "first_name", "last_name", "language", "time_zone")


_local = threading.local()


class RecordingUndefined(ChainableUndefined):
    """Renders as an empty string but notes which variable was missing (for warnings).

    Chainable, so `{{ attributes.plan.name }}` on a profile without a plan is empty rather than an
    error; `default(...)` still applies.
    """

    __slots__ = ()

    def _note(self):
        sink = getattr(_local, "missing", None)
        if sink is not None:
            sink.add(self._undefined_name or "?")

    def __str__(self):
        self._note()
        return ""

    def __iter__(self):
        self._note()
        return iter(())

    def __bool__(self):
        self._note()
        return False

    def __len__(self):
        self._note()
        return 0


def _env(autoescape: bool, undefined=RecordingUndefined) -> MessageEnvironment:
    return MessageEnvironment(autoescape=autoescape, undefined=undefined, keep_trailing_newline=True)


HTML_ENV = _env(True)
TEXT_ENV = _env(False)


def profile_context(profile) -> dict:
    """The plain dict a template sees for a profile (a model instance or a dict of its fields)."""
    get = profile.get if isinstance(profile, dict) else lambda k, d=None: getattr(profile, k, d)
    # Empty fields are left out, so `{{ first_name|default("friend") }}` works and a missing value
    # is reported as a warning with the count of profiles that lack it.
    ctx = {name: value for name in PROFILE_FIELDS if (value := get(name, ""))}
    ctx["attributes"] = {k: v for k, v in (get("attributes", None) or {}).items() if v not in ("", None)}
    full_name = f"{ctx.get('first_name', '')} {ctx.get('last_name', '')}".strip()
    if full_name:
        ctx["full_name"] = full_name
    return ctx


@dataclass
class TemplateProblem:
    level: str  # "critical" or "warning"
    text: str


@dataclass
class CompiledContent:
    subject: object
    html: object | None
    text: object
    problems: list[TemplateProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.level == "critical" for p in self.problems)


def _compile(env, source: str, part: str, problems: list[TemplateProblem]):
    """The compiled template, or None with a critical problem saying why: a syntax error, a tag a
    message cannot use ({% extends %}, {% include %}, {% import %}), or anything else that stops it
    compiling (nesting too deep for the parser…)."""

    def problem(text: str):
        problems.append(TemplateProblem("critical", text))

    try:
        ast = env.parse(source)
        tags = forbidden_tags(ast)
        if tags:
            problem(
                _("Personalization error in the %(part)s: %(tags)s cannot be used in a message (it is a single template). Remove it and prepare again.")
                % {"part": part, "tags": ", ".join(tags)}
            )
            return None
        return env.from_string(source)
    except TemplateSyntaxError as e:
        problem(
            _("Personalization error in the %(part)s, line %(line)s: %(error)s. Correct the template and prepare again.")
            % {"part": part, "line": e.lineno, "error": (e.message or "").rstrip(".")}
        )
    except RecursionError:
        problem(
            _("Personalization error in the %(part)s: the template is nested too deeply to be read. Simplify it and prepare again.")
            % {"part": part}
        )
    except TemplateLimitError as e:
        problem(str(e))
    except Exception as e:  # noqa: BLE001 - whatever stops a template compiling is reported, never raised
        problem(
            _("Personalization error in the %(part)s: the template cannot be compiled (%(error)s). Correct it and prepare again.")
            % {"part": part, "error": f"{type(e).__name__}: {e}"}
        )
    return None


def compile_content(*, subject: str, html: str, text: str) -> CompiledContent:
    problems: list[TemplateProblem] = []
    compiled_html = _compile(HTML_ENV, html, "HTML content", problems) if html else None
    if text or not html:
        compiled_text = _compile(TEXT_ENV, text, "text content", problems)
    elif compiled_html is not None:
        compiled_text = _compile(TEXT_ENV, html_to_text(html), "text content", problems)
    else:
        compiled_text = None  # derived from HTML that does not compile: already reported
    return CompiledContent(
        subject=_compile(TEXT_ENV, subject, "subject", problems), html=compiled_html, text=compiled_text, problems=problems
    )


def check_template(source: str, *, autoescape: bool):
    """A template that evaluates what `source` evaluates, without its static text and with each
    repeated top-level expression kept once: rendering it for a profile finds the same missing
    variables and errors as rendering the whole message, several times faster (preparation checks
    every recipient)."""
    env = HTML_ENV if autoescape else TEXT_ENV
    ast = env.parse(source)
    seen: set[str] = set()
    for output in ast.find_all(nodes.Output):
        top = output in ast.body
        kept = []
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                continue
            if top:
                key = repr(node)
                if key in seen:
                    continue
                seen.add(key)
            kept.append(node)
        output.nodes = kept
    return env.template_class.from_code(env, env.compile(ast), env.make_globals(None), None)


def render_with_missing(template, context: dict) -> tuple[str, set[str]]:
    """Render and return the names of variables that were missing for this context."""
    _local.missing = missing = set()
    try:
        return template.render(context), missing
    finally:
        _local.missing = None


def variables_used(source: str) -> set[str]:
    try:
        return meta.find_undeclared_variables(HTML_ENV.parse(source))
    except Exception:  # noqa: BLE001 - a template that does not compile uses nothing we can tell
        return set()


# --- HTML to text ---------------------------------------------------------------------------
class _TextExtractor(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}
    SKIP = {"style", "script", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.href: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "a":
            self.href.append(dict(attrs).get("href"))
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "a" and self.href:
            href = self.href.pop()
            if href and not href.startswith(("#", "mailto:")):
                self.parts.append(f" ({href})")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))


@lru_cache(maxsize=256)
def html_to_text(html: str) -> str:
    """A readable text version of an HTML message (links kept in brackets)."""
    if not html:
        return ""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# --- one recipient's copy -------------------------------------------------------------------
@dataclass
class RenderedMessage:
    subject: str
    html: str
    text: str
    missing: set[str] = field(default_factory=set)


def _tracking_context(sending_log_id: int | None) -> dict:
    if sending_log_id is None:
        return {"unsubscribe_url": "#unsubscribe", "mirror_url": "#mirror"}
    try:
        from .links import RecipientTracking
    except ImportError:  # pragma: no cover - tracking links not installed
        return {"unsubscribe_url": "", "mirror_url": ""}
    tracking = RecipientTracking(sending_log_id)
    return {"tracking": tracking, "unsubscribe_url": tracking.unsubscribe_url, "mirror_url": tracking.mirror_url}


def render_message(*, delivery, profile, sending_log_id: int | None = None) -> RenderedMessage:
    """The personalized copy of `delivery` for `profile` (with tracking when `sending_log_id` is given).

    Used by the preview, the mirror page and the tests; the sender uses the same compiled templates
    through `deliveries.channels.email.MessageSkeleton`.
    """
    html_source = delivery.html
    if sending_log_id is not None and html_source:
        try:
            from .links import compile_tracked_html

            url_ids = dict(delivery.tracked_urls.values_list("url", "id"))
            html_source = compile_tracked_html(html_source, url_ids)
        except ImportError:  # pragma: no cover
            pass
    compiled = compile_content(subject=delivery.subject, html=html_source, text=delivery.text)
    if not compiled.ok:
        raise ValueError(compiled.problems[0].text)
    ctx = profile_context(profile) | _tracking_context(sending_log_id)
    subject, m1 = render_with_missing(compiled.subject, ctx)
    html, m2 = render_with_missing(compiled.html, ctx) if compiled.html else ("", set())
    text, m3 = render_with_missing(compiled.text, ctx)
    return RenderedMessage(subject=" ".join(subject.split()), html=html, text=text, missing=m1 | m2 | m3)


__all__ = [
    "TemplateLimitError",
    "CompiledContent",
    "RenderedMessage",
    "compile_content",
    "html_to_text",
    "profile_context",
    "render_message",
    "render_with_missing",
]
