"""The OpenAPI schema documents every error an operation can answer, with its shape.

Every error is `{"detail": "<a sentence>", "code": "<machine code>"}`; a validation error (400)
adds `errors` (the per-field messages). Operations list the statuses they can answer even when a
view declares only its success: 400 (bad input, including a NUL character or an invalid page),
401 and 403 (signed-in operations), 404, 405 is left to the Allow header, 409 (a refused action,
on writes), 429 (throttled sign-in)."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="A sentence that says what went wrong and what to do.")
    code = serializers.CharField(help_text="A machine-readable code.")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.JSONField(required=False, help_text="Per-field messages (field name -> list of sentences).")


WRITES = ("POST", "PUT", "PATCH", "DELETE")


class DispatchAutoSchema(AutoSchema):
    def _error_codes(self) -> list[int]:
        public = any(isinstance(p, AllowAny) for p in self.view.get_permissions())
        codes = [400, 404]
        if not public:
            codes += [401, 403]
        if self.method in WRITES:
            codes.append(409)
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if str(code) not in responses:
                serializer = ValidationErrorSerializer if code == 400 else ErrorSerializer
                responses[str(code)] = self._get_response_for_code(serializer, str(code), direction=direction)
        return responses
