"""Filter audiences: a small condition language evaluated in SQL (never profile by profile).

Shape (stored in `Audience.conditions`)::

    {"op": "and" | "or",
     "conditions": [
        {"field": "language", "operator": "equals", "value": "fr"},
        {"field": "attributes__tier", "operator": "in", "value": ["gold", "silver"]},
        {"op": "or", "conditions": [...]},          # a nested group
     ]}

Fields: the profile's own fields (FIELDS below) and any free attribute as `attributes__<key>`
(`attributes.<key>` is accepted too). Operators: equals, not_equals, contains, in, is_empty,
is_not_empty, before, after (dates, `YYYY-MM-DD`). Text comparisons are exact except `contains`
(case-insensitive) and the email, which is always compared case-insensitively. A group without
conditions matches every profile.
"""

import re
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import Q, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.errors import InvalidInput

TEXT, DATETIME, BOOLEAN, ATTRIBUTE = "text", "datetime", "boolean", "attribute"

FIELDS = {
    "email": (TEXT, gettext_lazy("Email")),
    "first_name": (TEXT, gettext_lazy("First name")),
    "last_name": (TEXT, gettext_lazy("Last name")),
    "phone": (TEXT, gettext_lazy("Phone")),
    "language": (TEXT, gettext_lazy("Language")),
    "time_zone": (TEXT, gettext_lazy("Time zone")),
    "created_at": (DATETIME, gettext_lazy("Created")),
    "updated_at": (DATETIME, gettext_lazy("Updated")),
    "email_denylisted": (BOOLEAN, gettext_lazy("Email on denylist")),
    "sms_denylisted": (BOOLEAN, gettext_lazy("SMS on denylist")),
}

OPERATORS = {
    "equals": gettext_lazy("equals"),
    "not_equals": gettext_lazy("does not equal"),
    "contains": gettext_lazy("contains"),
    "in": gettext_lazy("is one of"),
    "is_empty": gettext_lazy("is empty"),
    "is_not_empty": gettext_lazy("is not empty"),
    "before": gettext_lazy("is before"),
    "after": gettext_lazy("is after"),
}
OPERATORS_BY_KIND = {
    TEXT: ("equals", "not_equals", "contains", "in", "is_empty", "is_not_empty"),
    DATETIME: ("before", "after", "is_empty", "is_not_empty"),
    BOOLEAN: ("equals", "not_equals"),
    ATTRIBUTE: ("equals", "not_equals", "contains", "in", "is_empty", "is_not_empty", "before", "after"),
}
NO_VALUE = ("is_empty", "is_not_empty")
MAX_DEPTH = 4
MAX_CONDITIONS = 50
_ATTR_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$")


def empty_conditions() -> dict:
    return {"op": "and", "conditions": []}


def field_kind(field: str) -> tuple[str, str | None]:
    """(kind, attribute key or None) of a condition's field; raises InvalidInput when unknown."""
    if field in FIELDS:
        return FIELDS[field][0], None
    for prefix in ("attributes__", "attributes."):
        if field.startswith(prefix):
            key = field[len(prefix) :]
            if _ATTR_KEY.match(key):
                return ATTRIBUTE, key
            raise InvalidInput(
                _("“%(key)s” is not a valid attribute name: use letters, digits, “_” or “-”.") % {"key": key},
                code="invalid_condition",
            )
    raise InvalidInput(
        _("“%(field)s” is not a profile field. Choose one of %(fields)s, or attributes__<name>.")
        % {"field": field, "fields": ", ".join(FIELDS)},
        code="invalid_condition",
    )


def _parse_date(value, field) -> date:
    if isinstance(value, date):
        return value if not isinstance(value, datetime) else value.date()
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise InvalidInput(
            _("“%(value)s” is not a date for %(field)s: write it as YYYY-MM-DD.") % {"value": value, "field": field},
            code="invalid_condition",
        )


def _parse_bool(value, field) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise InvalidInput(
        _("%(field)s is true or false, not “%(value)s”.") % {"field": field, "value": value}, code="invalid_condition"
    )


def _as_list(value) -> list[str]:
    if isinstance(value, list | tuple):
        items = value
    else:
        items = str(value or "").split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def conditions_clean(conditions) -> dict:
    """Validate and normalize a condition tree; raise InvalidInput with a sentence when wrong."""
    count = 0

    def clean(node, depth):
        nonlocal count
        if not isinstance(node, dict):
            raise InvalidInput(_("Each condition must be an object."), code="invalid_condition")
        if "conditions" in node or "op" in node:
            if depth > MAX_DEPTH:
                raise InvalidInput(
                    _("Groups can be nested %(n)d levels deep at most.") % {"n": MAX_DEPTH}, code="invalid_condition"
                )
            op = str(node.get("op", "and")).lower()
            if op not in ("and", "or"):
                raise InvalidInput(_("A group combines its conditions with “and” or “or”."), code="invalid_condition")
            children = node.get("conditions") or []
            if not isinstance(children, list):
                raise InvalidInput(_("A group's “conditions” must be a list."), code="invalid_condition")
            return {"op": op, "conditions": [clean(c, depth + 1) for c in children]}
        count += 1
        if count > MAX_CONDITIONS:
            raise InvalidInput(
                _("A filter has %(n)d conditions at most.") % {"n": MAX_CONDITIONS}, code="invalid_condition"
            )
        field = str(node.get("field", "")).strip()
        operator = str(node.get("operator", "")).strip()
        kind, _key = field_kind(field)
        if operator not in OPERATORS_BY_KIND[kind]:
            raise InvalidInput(
                _("“%(op)s” does not apply to %(field)s: choose one of %(ops)s.")
                % {"op": operator, "field": field, "ops": ", ".join(OPERATORS_BY_KIND[kind])},
                code="invalid_condition",
            )
        value = node.get("value")
        if operator in NO_VALUE:
            value = None
        elif operator in ("before", "after"):
            value = _parse_date(value, field).isoformat()
        elif operator == "in":
            value = _as_list(value)
            if not value:
                raise InvalidInput(
                    _("Give at least one value for “is one of” on %(field)s.") % {"field": field},
                    code="invalid_condition",
                )
        elif kind == BOOLEAN:
            value = _parse_bool(value, field)
        else:
            value = "" if value is None else str(value).strip()
            if operator == "contains" and not value:
                raise InvalidInput(
                    _("Give the text that %(field)s must contain.") % {"field": field}, code="invalid_condition"
                )
        return {"field": field, "operator": operator, "value": value}

    if not conditions:
        return empty_conditions()
    if isinstance(conditions, dict) and "conditions" not in conditions and "op" not in conditions:
        conditions = {"op": "and", "conditions": [conditions]}
    return clean(conditions, 1)


def _day_start(d: date) -> datetime:
    return timezone.make_aware(datetime.combine(d, time.min))


class _Builder:
    """Turns a cleaned tree into (Q, aliases) — aliases are text extractions of attributes."""

    def __init__(self):
        self.aliases: dict = {}
        self.native_json_contains = connection.vendor == "postgresql"

    def attr(self, key: str) -> str:
        name = f"_attr_{key.replace('-', '_')}"
        # Cast: a plain text value, so lookups compare text (KT alone keeps JSON lookups on SQLite).
        self.aliases.setdefault(name, Cast(KT(f"attributes__{key}"), output_field=TextField()))
        return name

    def group(self, node) -> Q:
        qs = [self.node(c) for c in node["conditions"]]
        if not qs:
            return Q()
        result = qs[0]
        for q in qs[1:]:
            result = (result | q) if node["op"] == "or" else (result & q)
        return result

    def node(self, node) -> Q:
        if "conditions" in node:
            inner = self.group(node)
            # An empty nested group matches everything, like an empty filter.
            return inner if inner else Q(pk__isnull=False)
        field, op, value = node["field"], node["operator"], node["value"]
        kind, key = field_kind(field)
        if kind == ATTRIBUTE:
            return self.attribute(key, op, value)
        if kind == BOOLEAN:
            q = Q(**{field: value})
            return q if op == "equals" else ~q
        if kind == DATETIME:
            if op == "is_empty":
                return Q(**{f"{field}__isnull": True})
            if op == "is_not_empty":
                return Q(**{f"{field}__isnull": False})
            d = date.fromisoformat(value)
            if op == "before":
                return Q(**{f"{field}__lt": _day_start(d)})
            return Q(**{f"{field}__gte": _day_start(d + timedelta(days=1))})
        # text columns (never NULL)
        column = field
        if field == "email":
            column = "email_key"
            value = [v.lower() for v in value] if isinstance(value, list) else (value or "").lower()
            if op == "is_empty":
                return Q(email_key__isnull=True)
            if op == "is_not_empty":
                return Q(email_key__isnull=False)
        if op == "equals":
            return Q(**{column: value})
        if op == "not_equals":
            return ~Q(**{column: value})
        if op == "contains":
            if column == "email_key":  # already lower-cased: a plain LIKE, no UPPER() per row
                return Q(email_key__contains=value)
            return Q(**{f"{column}__icontains": value})
        if op == "in":
            return Q(**{f"{column}__in": value})
        if op == "is_empty":
            return Q(**{column: ""})
        return ~Q(**{column: ""})  # is_not_empty

    def attribute(self, key, op, value) -> Q:
        a = self.attr(key)
        present = Q(**{f"{a}__isnull": False}) & ~Q(**{a: ""})
        if op == "equals":
            if self.native_json_contains:
                # jsonb @> uses the GIN index on attributes; CSV imports store strings.
                return Q(attributes__contains={key: value})
            return Q(**{a: value})
        if op == "not_equals":
            return Q(**{f"{a}__isnull": True}) | ~Q(**{a: value})
        if op == "contains":
            return Q(**{f"{a}__icontains": value})
        if op == "in":
            return Q(**{f"{a}__in": value})
        if op == "is_empty":
            return ~present
        if op == "is_not_empty":
            return present
        d = date.fromisoformat(value)
        if op == "before":
            return present & Q(**{f"{a}__lt": d.isoformat()})
        return present & Q(**{f"{a}__gte": (d + timedelta(days=1)).isoformat()})


def conditions_to_q(conditions) -> tuple[Q, dict]:
    """(Q, aliases) for a condition tree: `Profile.objects.alias(**aliases).filter(q)`."""
    builder = _Builder()
    q = builder.group(conditions_clean(conditions))
    return q, builder.aliases


def conditions_describe(conditions) -> str:
    """A one-line reading of the conditions, for lists and summaries."""

    def describe(node):
        if "conditions" in node:
            parts = [describe(c) for c in node["conditions"]]
            if not parts:
                return str(_("every profile"))
            joiner = f" {_('or') if node['op'] == 'or' else _('and')} "
            text = joiner.join(parts)
            return f"({text})" if len(parts) > 1 else text
        kind, key = field_kind(node["field"])
        label = (_("attribute %(name)s") % {"name": key}) if key else str(FIELDS[node["field"]][1])
        op = str(OPERATORS[node["operator"]])
        value = node["value"]
        if node["operator"] in NO_VALUE:
            return f"{label} {op}"
        if isinstance(value, list):
            value = ", ".join(value)
        return f"{label} {op} “{value}”"

    text = describe(conditions_clean(conditions))
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text
