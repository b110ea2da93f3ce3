"""JSON input is taken as typed: a string field takes a string, a number field a number, a boolean
field true or false. DRF by default coerces (5 becomes "5", "5" becomes 5, 0 becomes false), so
a client's type mistake would pass silently and the API would accept what its schema refuses.

Query strings and forms carry only text: there the usual conversions stay (a serializer fed a
QueryDict, as the lists' query parameters are)."""

from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field
from rest_framework import fields, serializers

_TYPES = {
    fields.CharField: (str,),
    fields.IntegerField: (int,),
    fields.FloatField: (int, float),
    fields.DecimalField: (int, float, str),
    fields.BooleanField: (bool,),
}
_MESSAGES = {
    fields.CharField: "Not a valid string.",
    fields.IntegerField: "A valid integer is required.",
    fields.FloatField: "A valid number is required.",
    fields.DecimalField: "A valid number is required.",
    fields.BooleanField: "Must be true or false.",
}


def _from_json(field) -> bool:
    root = field.root
    data = getattr(root, "initial_data", None)
    return data is not None and not isinstance(data, QueryDict)


def make_json_input_strict() -> None:
    for cls, types in _TYPES.items():
        if getattr(cls, "_dispatch_strict", False):
            continue
        original = cls.to_internal_value

        def to_internal_value(self, data, _original=original, _types=types, _cls=cls):
            if _from_json(self) and (isinstance(data, bool) != (bool in _types) or not isinstance(data, _types)):
                from rest_framework.exceptions import ValidationError

                raise ValidationError(_MESSAGES[_cls], code="invalid")
            return _original(self, data)

        cls.to_internal_value = to_internal_value
        cls._dispatch_strict = True


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON object (names and values), documented and checked as one."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object of names and values.", code="invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
class NullableJSONObjectField(JSONObjectField):
    pass
