"""Logging filters (referenced by settings.LOGGING; no Django import here)."""

import logging


class OneLineForbidden(logging.Filter):
    """A 403 is an answer the app chose (a page or an action refused to someone without the role
    it needs): logged as one line, without the traceback of the PermissionDenied behind it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403:
            record.exc_info = None
            record.exc_text = None
        return True
