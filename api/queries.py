"""The query parameters of the API's lists, declared once: the schema documents them (each
serializer is given to `extend_schema(parameters=[…])`) and the view validates them, so an
unknown status, kind or period is a 400 with a sentence rather than silently ignored."""

from rest_framework import serializers

from audiences.models import Channel, Quarantine
from deliveries.models import ExclusionCause, FailureReason, LogicalStatus, SendingStatus
from ops.models import Criterion
from ops.selectors import PERIODS, SORTS
from tracking.models import TrackingLog


def blank_or(choices) -> list:
    """The choices of a filter (leave the parameter out for any)."""
    return list(choices)


class DeliveryQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=blank_or(LogicalStatus.values), required=False, help_text="Logical status.")
    channel = serializers.ChoiceField(choices=blank_or(Channel.values), required=False)
    q = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="Words of the label, or DM<id>.")
    archived = serializers.ChoiceField(choices=["1"], required=False, help_text="1: the archived messages instead.")


class ProfileQuery(serializers.Serializer):
    q = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="Words matched against email and names.")


class ExclusionQuery(serializers.Serializer):
    cause = serializers.ChoiceField(choices=blank_or(ExclusionCause.values), required=False, help_text="Only this cause.")


class SendingLogQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=blank_or(SendingStatus.values), required=False)
    reason = serializers.ChoiceField(choices=blank_or(FailureReason.values), required=False, help_text="Failure reason.")


class QuarantineQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=blank_or(Quarantine.Status.values), required=False)
    channel = serializers.ChoiceField(choices=blank_or(Channel.values), required=False)
    address = serializers.CharField(required=False, allow_blank=True, max_length=254, help_text="Part of the address.")


class TrackingLogQuery(serializers.Serializer):
    kind = serializers.ChoiceField(choices=blank_or(TrackingLog.Kind.values), required=False, help_text="Only this type.")
    machine = serializers.ChoiceField(choices=blank_or(["human", "machine"]), required=False, help_text="People only, or machines only.")


class DeploymentsQuery(serializers.Serializer):
    period = serializers.ChoiceField(choices=list(PERIODS), required=False, help_text="Default 7d.")
    channel = serializers.ChoiceField(choices=blank_or(Channel.values), required=False)
    owner = serializers.IntegerField(required=False, min_value=1, help_text="User id of the owner (creator).")
    status = serializers.ChoiceField(choices=blank_or(LogicalStatus.values), required=False, help_text="Logical status.")
    sort = serializers.ChoiceField(
        choices=[*SORTS, *(f"-{s}" for s in SORTS)], required=False, help_text="Prefix with - for descending. Default -started."
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, help_text="Recently sent rows returned (default 50).")


class AlertQuery(serializers.Serializer):
    open = serializers.BooleanField(required=False, allow_null=False, help_text="true: only alerts not acknowledged yet.")
    delivery = serializers.IntegerField(required=False, min_value=1)
    criterion = serializers.ChoiceField(choices=blank_or(Criterion.values), required=False)


def validated(query_class, request) -> dict:
    """The request's query parameters checked by `query_class` (ValidationError -> 400)."""
    query = query_class(data=request.query_params)
    blank = {
        name: [f"Give a value for “{name}”, or leave the parameter out."]
        for name, field in query.fields.items()
        if request.query_params.get(name) == "" and not isinstance(field, serializers.CharField)
    }
    if blank:
        raise serializers.ValidationError(blank)
    query.is_valid(raise_exception=True)
    return {k: v for k, v in query.validated_data.items() if v not in ("", None)}
