"""Email address normalization and syntax check: pure functions, cheap enough for a million rows.

Stored form (DOMAIN.md, issue 3): the local part as given, the domain lower-cased. Matching is
case-insensitive everywhere (`Profile.email_key`, `Quarantine.address` are the whole address
lower-cased).
"""

import re

# Dot-atom local part (RFC 5322 without quoted strings or comments), which is what real
# senders accept; a domain of letters/digits/hyphens labels with a top-level label of 2+ letters
# (or an IDN "xn--" label). Unicode letters are accepted in both parts (RFC 6531, SMTPUTF8).
_ATEXT = r"[\w!#$%&'*+/=?^`{|}~-]"
_LOCAL = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"(?:[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?)"
_TLD = r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})"
_EMAIL_RE = re.compile(rf"{_LOCAL}@(?:{_LABEL}\.)+{_TLD}", re.IGNORECASE)
# The same rules for plain ASCII addresses (nearly all of them), about twice as fast.
_ASCII_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ASCII_LABEL = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
_ASCII_EMAIL_RE = re.compile(
    rf"{_ASCII_ATEXT}+(?:\.{_ASCII_ATEXT}+)*@(?:{_ASCII_LABEL}\.)+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})"
)


def normalize_email(value) -> str:
    """Trim the address and lower-case its domain; keep the local part as given.

    `"  Jane.Doe@Example.COM "` -> `"Jane.Doe@example.com"`. A value without "@" is only trimmed.
    """
    value = (value or "").strip()
    local, at, domain = value.rpartition("@")
    if not at:
        return value
    return f"{local}@{domain.lower()}"


def email_key(value) -> str:
    """The case-insensitive matching key of an address (all of it lower-cased)."""
    return normalize_email(value).lower()


def is_valid_email(value) -> bool:
    """True when `value` (normalized or not) is a syntactically valid address."""
    value = (value or "").strip()
    if not value or len(value) > 254:
        return False
    local, at, domain = value.rpartition("@")
    if not at or len(local) > 64 or len(domain) > 253:
        return False
    if value.isascii():
        return _ASCII_EMAIL_RE.fullmatch(value) is not None
    return _EMAIL_RE.fullmatch(value) is not None
