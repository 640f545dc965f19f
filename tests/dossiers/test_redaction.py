"""Redaction helpers: phones (found by phonenumbers' matcher), emails, Luhn-checked cards."""

from __future__ import annotations

from dossiers.redaction import luhn_valid, mask_for_logs, redact


def test_phone_numbers_are_masked_in_national_and_international_form():
    text = "Call +44 20 7183 8750 or (415) 555-0134, or text +1-415-555-0100."
    assert redact(text) == "Call [phone] or [phone], or text [phone]."


def test_dates_times_amounts_and_ids_are_left_alone():
    text = (
        "On 2026-11-25 at 14:30 order 12345678 cost $1,234.56; ref 4f3e2a10-1234-5678-9abc-def012345678, "
        "invoice INV-2026-000123"
    )
    assert redact(text) == text


def test_emails_are_masked():
    assert redact("write to Jane.Doe+news@mail.example.co.uk today") == "write to [email] today"


def test_card_numbers_are_masked_only_when_luhn_valid():
    text = "card 4111 1111 1111 1111, 5500-0000-0000-0004, not 4111 1111 1111 1112 nor 1234567890123"
    assert redact(text) == "card [card], [card], not 4111 1111 1111 1112 nor 1234567890123"


def test_luhn():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_log_masks_keep_a_hint_but_not_the_value():
    masked = mask_for_logs("to +14155550134 from alice@example.com")
    assert masked == "to [phone …34] from a•••@example.com"


def test_empty_and_digitless_text():
    assert redact("") == ""
    assert redact("nothing to see") == "nothing to see"
