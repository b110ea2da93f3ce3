import pytest

from audiences.emails import email_key, is_valid_email, normalize_email


def test_normalize_keeps_the_local_part_and_lowers_the_domain():
    assert normalize_email("  Jane.Doe@Example.COM ") == "Jane.Doe@example.com"
    assert email_key("Jane.Doe@Example.COM") == "jane.doe@example.com"
    assert normalize_email("no-at-sign") == "no-at-sign"
    assert normalize_email(None) == ""


@pytest.mark.parametrize(
    "value",
    ["a@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie", "ÉLodie@exämple.fr", "x@xn--bcher-kva.ch"],
)
def test_valid_addresses(value):
    assert is_valid_email(value)


@pytest.mark.parametrize(
    "value",
    ["", "plain", "@example.com", "a@", "a@b", "a..b@example.com", ".a@example.com", "a@example..com",
     "a b@example.com", "a@-example.com", "a@example.c", "a@example.com.", "a@exa_mple.com", "x" * 65 + "@example.com"],
)
def test_invalid_addresses(value):
    assert not is_valid_email(value)
