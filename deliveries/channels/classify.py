"""Classify an SMTP reply into a failure type and reason (DOMAIN.md §5, RFC 3463)."""

import re

ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
USER_UNKNOWN_WORDS = re.compile(r"user unknown|no such user|unknown user|does not exist|mailbox unavailable|recipient rejected|invalid recipient", re.I)
MAILBOX_FULL_WORDS = re.compile(r"mailbox full|over quota|quota exceeded|insufficient storage", re.I)
SPAM_WORDS = re.compile(r"spam|blocked|blacklist|denylist|policy|reputation", re.I)


def classify(code: int, text: str = "") -> tuple[str, str]:
    """Return (failure_type, failure_reason) for a refusal `code` (4xx/5xx) and its text."""
    permanent = code >= 500
    m = ENHANCED.search(text or "")
    if m:
        klass, subject, detail = m.group(1), int(m.group(2)), int(m.group(3))
        permanent = klass == "5"
        if subject == 1 and detail in (1, 0, 6):
            return ("hard", "user_unknown") if permanent else ("soft", "user_unknown")
        if subject == 1 and detail == 2:
            return "soft", "invalid_domain"
        if subject == 2 and detail == 2:
            return "soft", "mailbox_full"
        if subject == 2 and detail == 1:
            return ("hard" if permanent else "soft"), "account_disabled"
        if subject == 7:
            return ("hard" if permanent else "soft"), "refused"
        if subject == 4:
            return "soft", "unreachable"
    if MAILBOX_FULL_WORDS.search(text or ""):
        return "soft", "mailbox_full"
    if permanent and USER_UNKNOWN_WORDS.search(text or ""):
        return "hard", "user_unknown"
    if SPAM_WORDS.search(text or ""):
        return ("hard" if permanent else "soft"), "refused"
    return ("hard", "not_defined") if permanent else ("soft", "not_defined")
