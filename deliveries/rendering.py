"""Render a message's parts for one recipient, evaluating each personalization expression once.

A message's subject, HTML and text usually hold the same expressions many times over: the text
part derived from the HTML repeats every one of them, and a newsletter names `first_name` or a
tracked link in several places. When every part is "flat" (text and `{{ … }}` expressions only,
no `{% … %}` block), the parts are cut into static text and expression slots once per delivery;
per recipient, one compiled template evaluates each distinct expression once (in the HTML
environment, so values come out escaped), and the parts are joined from the pieces: the HTML takes
the escaped values, the subject and text take them unescaped (`html.unescape` is the exact inverse
of the escaping for every value that was not marked safe).

A part with blocks (`{% if %}`, `{% for %}`, …) makes the whole message use the templates as
they are: same output, each part rendered in full.
"""

from __future__ import annotations

import html as html_lib

from jinja2 import nodes

from .personalization import HTML_ENV, TEXT_ENV, html_to_text, render_with_missing

SEPARATOR = "\x00"  # never in a value: PostgreSQL text and JSON cannot hold NUL


class NotFlat(Exception):
    pass


def _format(pieces: list) -> str:
    """The part as a str.format() pattern: static text (braces doubled) and `{n}` per slot, so that a
    recipient's part is one C call over the list of values."""
    return "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else f"{{{p}}}" for p in pieces)


def _pieces(env, source: str, slots: dict[str, int], exprs: list) -> list:
    """The part as a list of static strings and expression slot numbers (ints)."""
    ast = env.parse(source)
    pieces: list = []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            raise NotFlat(type(node).__name__)
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                pieces.append(child.data)
                continue
            key = repr(child)
            if key not in slots:
                slots[key] = len(exprs)
                exprs.append(child)
            pieces.append(slots[key])
    return pieces


class FlatRenderer:
    """Subject, HTML (optional) and text of a message, rendered with one evaluation per expression.

    `text=""` with an HTML part derives the text from the HTML, as `compile_content` does. Raises
    NotFlat (or jinja2.TemplateSyntaxError) when the parts cannot be rendered this way."""

    def __init__(self, *, subject: str, html: str, text: str):
        slots: dict[str, int] = {}
        exprs: list = []
        subject_pieces = _pieces(TEXT_ENV, subject, slots, exprs)
        html_pieces = _pieces(HTML_ENV, html, slots, exprs) if html else None
        text_source = text if (text or not html) else html_to_text(html)
        text_pieces = _pieces(TEXT_ENV, text_source, slots, exprs)
        self.subject, self.text = _format(subject_pieces), _format(text_pieces)
        self.html = _format(html_pieces) if html_pieces is not None else None
        self.count = len(exprs)
        body: list = []
        for i, expr in enumerate(exprs):
            if i:
                body.append(nodes.TemplateData(SEPARATOR))
            body.append(expr)
        template = nodes.Template([nodes.Output(body)] if body else [])
        template.set_environment(HTML_ENV)
        code = HTML_ENV.compile(template)
        self.values = HTML_ENV.template_class.from_code(HTML_ENV, code, HTML_ENV.make_globals(None), None)

    def render(self, context: dict) -> tuple[str, str, str, set[str]]:
        """(subject, html, text, missing variable names) for one recipient."""
        missing: set[str] = set()
        if self.count:
            out, missing = render_with_missing(self.values, context)
            escaped = out.split(SEPARATOR)
            if len(escaped) != self.count:  # pragma: no cover - a value holding NUL
                raise ValueError("A personalization value holds a NUL character.")
        else:
            escaped = []
        plain = [html_lib.unescape(v) if "&" in v else v for v in escaped]
        html = self.html.format(*escaped) if self.html is not None else ""
        return self.subject.format(*plain), html, self.text.format(*plain), missing


def flat_renderer(*, subject: str, html: str, text: str) -> FlatRenderer | None:
    """A FlatRenderer for these parts, or None when one of them has blocks (render them whole)."""
    try:
        return FlatRenderer(subject=subject, html=html, text=text)
    except NotFlat:
        return None
