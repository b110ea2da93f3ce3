from django import forms
from django.utils.translation import gettext_lazy as _

from .conditions import FIELDS, OPERATORS, OPERATORS_BY_KIND, field_kind
from .models import Audience, Channel, Quarantine


class ProfileForm(forms.Form):
    email = forms.CharField(label=_("Email"), required=False, max_length=254)
    phone = forms.CharField(label=_("Phone"), required=False, max_length=32, help_text=_("International format, e.g. +33612345678"))
    first_name = forms.CharField(label=_("First name"), required=False, max_length=150)
    last_name = forms.CharField(label=_("Last name"), required=False, max_length=150)
    language = forms.CharField(label=_("Language"), required=False, max_length=16, help_text=_("e.g. fr, en-GB"))
    time_zone = forms.CharField(label=_("Time zone"), required=False, max_length=64, help_text=_("e.g. Europe/Paris"))
    attributes = forms.CharField(
        label=_("Attributes"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One per line: name = value"),
    )
    email_denylisted = forms.BooleanField(label=_("Email on denylist"), required=False)
    sms_denylisted = forms.BooleanField(label=_("SMS on denylist"), required=False)
    resubscribe_reason = forms.CharField(
        label=_("Reason for re-subscribing"),
        required=False,
        max_length=500,
        help_text=_("Needed to lift a denylist flag (the person opted out): where and when they asked. It is recorded."),
    )

    def limit_for(self, *, profile, can_resubscribe: bool) -> None:
        """Whoever cannot re-subscribe people sees the flags they cannot lift as read-only."""
        if profile is None:
            del self.fields["resubscribe_reason"]
            return
        if not can_resubscribe:
            del self.fields["resubscribe_reason"]
            for name in ("email_denylisted", "sms_denylisted"):
                if getattr(profile, name):
                    self.fields[name].disabled = True
                    self.fields[name].help_text = _("The person opted out: only an administrator can re-subscribe them.")

    @staticmethod
    def initial_for(profile) -> dict:
        data = {f: getattr(profile, f) for f in ("email", "phone", "first_name", "last_name", "language", "time_zone",
                                                  "email_denylisted", "sms_denylisted")}
        data["attributes"] = "\n".join(f"{k} = {v}" for k, v in (profile.attributes or {}).items())
        return data

    def clean_attributes(self):
        attrs = {}
        for n, line in enumerate(self.cleaned_data["attributes"].splitlines(), start=1):
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise forms.ValidationError(_("Line %(n)d: write each attribute as name = value.") % {"n": n})
            attrs[key.strip()] = value.strip()
        return attrs


class AudienceForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 2}))
    kind = forms.ChoiceField(
        label=_("Kind"),
        choices=Audience.Kind.choices,
        widget=forms.RadioSelect,
        initial=Audience.Kind.LIST,
        help_text=_("A list holds the profiles you add or import; a filter holds every profile matching its conditions."),
    )


class MembersForm(forms.Form):
    emails = forms.CharField(
        label=_("Email addresses"),
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "ann@example.com, bob@example.org"}),
        help_text=_("Separated by commas, spaces or new lines."),
    )

    def clean_emails(self):
        return [e for e in self.cleaned_data["emails"].replace(",", " ").replace(";", " ").split() if e]


class ImportForm(forms.Form):
    file = forms.FileField(label=_("CSV file (UTF-8, with a header)"))
    audience = forms.ModelChoiceField(
        label=_("Add the profiles to the list"),
        queryset=Audience.objects.filter(kind=Audience.Kind.LIST).order_by("name"),
        required=False,
        empty_label=_("— no list, profiles only —"),
    )


class QuarantineFilterForm(forms.Form):
    status = forms.ChoiceField(label=_("Status"), required=False, choices=[("", _("Any status")), *Quarantine.Status.choices])
    channel = forms.ChoiceField(label=_("Channel"), required=False, choices=[("", _("Any channel")), *Channel.choices])
    address = forms.CharField(label=_("Address contains"), required=False, max_length=254)


class QuarantineStatusForm(forms.Form):
    status = forms.ChoiceField(label=_("Status"), choices=Quarantine.Status.choices)


# --- condition builder (two levels: groups of conditions) ---------------------------------------

ATTRIBUTE = "attribute"


def field_choices():
    return [*((name, label) for name, (_k, label) in FIELDS.items()), (ATTRIBUTE, _("Attribute…"))]


def builder_rows_from_tree(tree: dict) -> dict:
    """A cleaned condition tree -> the builder's shape: {"op", "groups": [{"op", "conditions": [row]}]}.
    Returns None for trees nested deeper than the builder shows."""
    groups = []
    for child in tree.get("conditions", []):
        if "conditions" in child:
            if any("conditions" in c for c in child["conditions"]):
                return None
            groups.append({"op": child["op"], "conditions": [_row(c) for c in child["conditions"]]})
        else:
            groups.append({"op": "and", "conditions": [_row(child)]})
    return {"op": tree.get("op", "and"), "groups": groups}


def _row(cond: dict) -> dict:
    kind, key = field_kind(cond["field"])
    value = cond.get("value")
    if isinstance(value, list):
        value = ", ".join(value)
    elif isinstance(value, bool):
        value = "true" if value else "false"
    return {
        "field": ATTRIBUTE if key else cond["field"],
        "attr": key or "",
        "operator": cond["operator"],
        "value": "" if value is None else value,
    }


def builder_from_post(data) -> dict:
    """Read the builder's fields (op, g<j>-op, g<j>-c<k>-field/-attr/-operator/-value)."""
    groups: dict[int, dict] = {}
    for name in data:
        if name.startswith("g") and "-" in name:
            head, _sep, rest = name.partition("-")
            if not head[1:].isdigit():
                continue
            j = int(head[1:])
            group = groups.setdefault(j, {"op": data.get(f"g{j}-op", "and"), "conditions": {}})
            if rest.startswith("c") and "-" in rest:
                idx, _s, _part = rest[1:].partition("-")
                if idx.isdigit():
                    k = int(idx)
                    group["conditions"].setdefault(
                        k,
                        {
                            "field": data.get(f"g{j}-c{k}-field", "email"),
                            "attr": data.get(f"g{j}-c{k}-attr", "").strip(),
                            "operator": data.get(f"g{j}-c{k}-operator", "equals"),
                            "value": data.get(f"g{j}-c{k}-value", ""),
                        },
                    )
    return {
        "op": data.get("op", "and"),
        "groups": [
            {"op": groups[j]["op"], "conditions": [groups[j]["conditions"][k] for k in sorted(groups[j]["conditions"])]}
            for j in sorted(groups)
        ],
    }


def builder_apply(builder: dict, action: str) -> dict:
    """Apply a button's action: add-group, add:<j>, remove:<j>:<k>."""
    new_row = {"field": "language", "attr": "", "operator": "equals", "value": ""}
    if action == "add-group":
        builder["groups"].append({"op": "and", "conditions": [dict(new_row)]})
    elif action.startswith("add:"):
        j = int(action.split(":")[1])
        if 0 <= j < len(builder["groups"]):
            builder["groups"][j]["conditions"].append(dict(new_row))
    elif action.startswith("remove:"):
        _a, j, k = action.split(":")
        j, k = int(j), int(k)
        if 0 <= j < len(builder["groups"]) and 0 <= k < len(builder["groups"][j]["conditions"]):
            del builder["groups"][j]["conditions"][k]
            if not builder["groups"][j]["conditions"]:
                del builder["groups"][j]
    return builder


def builder_to_tree(builder: dict) -> dict:
    groups = []
    for group in builder["groups"]:
        conditions = []
        for row in group["conditions"]:
            field = f"attributes__{row['attr']}" if row["field"] == ATTRIBUTE else row["field"]
            conditions.append({"field": field, "operator": row["operator"], "value": row["value"]})
        if conditions:
            groups.append({"op": group["op"], "conditions": conditions})
    return {"op": builder["op"], "conditions": groups}


def builder_decorate(builder: dict) -> dict:
    """Add the operator choices that fit each row's field (for the template)."""
    for group in builder["groups"]:
        for row in group["conditions"]:
            if row["field"] == ATTRIBUTE:
                kind = "attribute"
            else:
                kind = FIELDS.get(row["field"], ("text",))[0]
            row["operators"] = [(op, OPERATORS[op]) for op in OPERATORS_BY_KIND[kind]]
            if row["operator"] not in OPERATORS_BY_KIND[kind]:
                row["operator"] = OPERATORS_BY_KIND[kind][0]
            row["needs_value"] = row["operator"] not in ("is_empty", "is_not_empty")
            row["kind"] = kind
    return builder
