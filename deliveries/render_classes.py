"""Which profiles render a template alike: preparation checks one profile per class, not each one.

What a recipient's copy reports when it is rendered for the check (the variables it found missing,
or the error it raised) depends only on the profile's data that the template reads, and often only
on whether that data is there. This module reads the template's syntax tree and says, for each
profile variable the template reads, what of it can change the outcome:

- a variable only printed (`{{ first_name }}`, through filters that turn any value into text, or
  `|default(…)`), or only tested for truth (`{% if attributes.vip %}`, `x or 'friend'`, `is
  defined`): only whether it is there (and, for an attribute, whether its value is true) matters.
  Printing any JSON value cannot fail;
- a variable used any other way (arithmetic, a comparison, a filter that can raise or whose result
  is tested, a loop, a call, an assignment, a name the template also binds itself): its value.

Profiles that agree on all of these render with the same missing variables and the same error, so
preparation groups the target by them (in SQL on PostgreSQL, one GROUP BY per statement) and
renders one profile per group, counting it as many times as the group has profiles. A template
that prints and tests only gives a handful of groups whatever the audience's size; one that
computes with a value unique to each profile renders each profile once, as before (flat memory:
groups are rendered a statement at a time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from jinja2 import TemplateSyntaxError, nodes

from .personalization import PROFILE_FIELDS, TEXT_ENV

# Python's str.strip() whitespace: what preparation's SQL trims to read an address as Python does.
WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())

# Filters that only turn their input into text (`soft_str`, `escape`, `str`), whatever its type:
# with constant arguments, their result depends on the value only through its text.
PRINT_FILTERS = frozenset(
    {"e", "escape", "forceescape", "upper", "lower", "title", "capitalize", "trim", "striptags", "string", "safe", "wordcount"}
)
DEFAULT_FILTERS = frozenset({"default", "d"})
PRESENCE_TESTS = frozenset({"defined", "undefined", "none"})

PRINT, TRUTH, VALUE = "print", "truth", "value"
_DICT_NAMES = frozenset(dir(dict))


@dataclass(frozen=True)
class Projection:
    """What of one profile variable can change a render's outcome.

    `kind`: "field" (a profile column, `name`), "full_name", "attr" (the attribute `name`) or
    "attributes" (the whole dict); `by_value`: its value matters, else only its presence (and truth)."""

    kind: str
    name: str = ""
    by_value: bool = False

    def lookup_sql(self, alias: str) -> tuple[str, list] | None:
        """For an attribute: the expression reading its value from profile row `alias` (selected
        once per row, then named in `sql`); None for the others."""
        return (f"{alias}.attributes -> %s", [self.name]) if self.kind == "attr" else None

    def sql(self, alias: str, value: str = "") -> tuple[str, list]:
        """The SQL expression (and its parameters) of this projection of profile row `alias`;
        `value`: for an attribute, the column holding its `lookup_sql`."""
        a = alias
        if self.kind == "field":
            return (f"{a}.{self.name}", []) if self.by_value else (f"({a}.{self.name} <> '')", [])
        if self.kind == "full_name":
            if self.by_value:
                return f"({a}.first_name || ' ' || {a}.last_name)", []
            return f"(btrim({a}.first_name || ' ' || {a}.last_name, %s) <> '')", [WHITESPACE]
        if self.kind == "attributes":
            return f"{a}.attributes::text", []
        if self.by_value:
            return f"({value})::text", []
        # Absent (no key, null or ""), present and false (false, 0 in any notation, [], {}), present and true.
        return (
            f"CASE WHEN {value} IS NULL OR {value} IN ('null'::jsonb, '\"\"'::jsonb) THEN 0"
            f" WHEN {value} IN ('false'::jsonb, '0'::jsonb, '[]'::jsonb, '{{}}'::jsonb) THEN 1 ELSE 2 END",
            [],
        )

    def key(self, row: dict):
        """The same projection computed in Python from a profile's fields (the portable path)."""
        if self.kind == "field":
            value = row.get(self.name) or ""
            return value if self.by_value else bool(value)
        if self.kind == "full_name":
            first, last = row.get("first_name") or "", row.get("last_name") or ""
            return (first, last) if self.by_value else bool(f"{first} {last}".strip())
        attributes = row.get("attributes")
        if not isinstance(attributes, dict):
            attributes = {}
        if self.kind == "attributes":
            return json.dumps(attributes)
        value = attributes.get(self.name)
        if self.by_value:
            return "absent" if self.name not in attributes else json.dumps(value)
        if value in ("", None):
            return 0
        return 2 if value else 1


@dataclass
class Classes:
    """The projections that split profiles into classes rendering alike, and the profile columns a
    representative needs to be rendered."""

    projections: list[Projection] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def key(self, row: dict) -> tuple:
        return tuple(p.key(row) for p in self.projections)


class _Walker:
    def __init__(self):
        self.uses: dict[tuple[str, str], set[str]] = {}  # (kind, name) -> contexts it is used in
        self.bound: set[str] = set()  # names the template binds itself (loop targets, set, macro args)

    def use(self, kind: str, name: str, ctx: str) -> None:
        self.uses.setdefault((kind, name), set()).add(ctx)

    def statement(self, node) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                self.expr(child, PRINT)
        elif isinstance(node, nodes.If):
            self.expr(node.test, TRUTH)
            for child in (*node.body, *node.elif_, *node.else_):
                self.statement(child)
        else:
            self.generic(node)

    def generic(self, node) -> None:
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.Name) and child.ctx in ("store", "param"):
                self.bound.add(child.name)
            elif isinstance(child, nodes.Expr):
                self.expr(child, VALUE)
            else:
                self.statement(child)

    @staticmethod
    def _const_args(node) -> bool:
        return (
            all(isinstance(a, nodes.Const) for a in node.args)
            and all(isinstance(k.value, nodes.Const) for k in node.kwargs)
            and node.dyn_args is None
            and node.dyn_kwargs is None
        )

    def expr(self, node, ctx: str) -> None:
        if isinstance(node, nodes.Name):
            if node.ctx in ("store", "param"):
                self.bound.add(node.name)
            elif node.name in PROFILE_FIELDS:
                self.use("field", node.name, ctx)
            elif node.name == "full_name":
                self.use("full_name", "", ctx)
            elif node.name == "attributes" and ctx != PRINT:  # printing the whole dict cannot fail
                self.use("attributes", "", VALUE)
        elif isinstance(node, (nodes.Getattr, nodes.Getitem)) and isinstance(node.node, nodes.Name) and node.node.name == "attributes" and node.node.ctx == "load":
            if isinstance(node, nodes.Getattr):
                key = node.attr if node.attr not in _DICT_NAMES else None  # attributes.items is dict.items
            else:
                key = node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None
                if not isinstance(node.arg, nodes.Const):
                    self.expr(node.arg, VALUE)
            if key is None:
                self.use("attributes", "", VALUE)
            else:
                self.use("attr", key, ctx)
        elif isinstance(node, nodes.CondExpr):
            self.expr(node.test, TRUTH)
            self.expr(node.expr1, ctx)
            if node.expr2 is not None:
                self.expr(node.expr2, ctx)
        elif isinstance(node, (nodes.And, nodes.Or)):
            inner = TRUTH if ctx in (PRINT, TRUTH) else VALUE
            self.expr(node.left, inner)
            self.expr(node.right, inner)
        elif isinstance(node, nodes.Not):
            self.expr(node.node, TRUTH)
        elif isinstance(node, nodes.Concat) and ctx == PRINT:
            for child in node.nodes:
                self.expr(child, PRINT)
        elif isinstance(node, nodes.Filter) and node.node is not None and self._const_args(node) and (
            (node.name in PRINT_FILTERS and ctx == PRINT) or (node.name in DEFAULT_FILTERS and ctx in (PRINT, TRUTH))
        ):
            self.expr(node.node, ctx)
        elif isinstance(node, nodes.Test) and node.name in PRESENCE_TESTS and not node.args and not node.kwargs:
            self.expr(node.node, TRUTH)
        else:
            self.generic(node)


def classes_of(source: str) -> Classes:
    """The classes of profiles that render `source` (a template in the text environment) alike.

    Raises TemplateSyntaxError for a template that does not compile (preparation checks that first)."""
    walker = _Walker()
    walker.statement(TEXT_ENV.parse(source))
    projections, columns = [], ["email"]
    for (kind, name), contexts in sorted(walker.uses.items()):
        by_value = VALUE in contexts or (kind == "field" and name in walker.bound) or (
            kind == "full_name" and "full_name" in walker.bound
        ) or (kind in ("attr", "attributes") and "attributes" in walker.bound)
        if kind == "attributes":
            by_value = True
        projections.append(Projection(kind, name, by_value))
        needed = {"field": [name], "full_name": ["first_name", "last_name"]}.get(kind, ["attributes"])
        columns += [c for c in needed if c not in columns]
    return Classes(projections=projections, columns=columns)


__all__ = ["WHITESPACE", "Classes", "Projection", "TemplateSyntaxError", "classes_of"]
