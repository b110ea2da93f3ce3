"""Domain errors shared by every app: a sentence a person can act on, and a machine code."""


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
