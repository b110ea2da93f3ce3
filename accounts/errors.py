"""Domain errors shared by every app: a sentence a person can act on, and a machine code."""

from django.http import Http404


class DispatchError(Exception):
    """A refused action. `status` is the HTTP status the API answers with (409 by default)."""

    status = 409
    code = "refused"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def __str__(self) -> str:
        return self.message


class InvalidInput(DispatchError):
    """Bad input. `fields` maps a field name to what is wrong with it, so a form can show each
    sentence next to its field (the message says them all)."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.fields = fields or {}


class NotFound(Http404):
    """No such object (or not any more). Each kind of object has one sentence, said by its one
    fetch (e.g. deliveries.selectors.delivery_get): pages answer their 404 page, the API
    {"detail": <the sentence>, "code": "not_found"}."""
