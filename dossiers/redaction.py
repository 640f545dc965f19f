"""Redaction helpers: mask phone numbers, email addresses and card numbers in free text.

They run offline (no model download): phone numbers are found with ``phonenumbers``'
own matcher, which checks each candidate against the numbering plan, so dates, order
numbers and ids are left alone; card numbers must pass the Luhn check.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import phonenumbers
from django.conf import settings

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by single spaces or dashes (how people type cards).
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# The matcher is the slow part: only strings with enough digits can hold a number.
_DIGITS_RE = re.compile(r"\d")
MIN_PHONE_DIGITS = 7

PHONE = "[phone]"
EMAIL = "[email]"
CARD = "[card]"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def mask_cards(text: str, replacement: str = CARD) -> str:
    def sub(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group())
        return replacement if luhn_valid(digits) else match.group()

    return CARD_RE.sub(sub, text)


def mask_emails(text: str, replacement: str | Callable[[str], str] = EMAIL) -> str:
    if "@" not in text:
        return text
    if callable(replacement):
        return EMAIL_RE.sub(lambda m: replacement(m.group()), text)
    return EMAIL_RE.sub(replacement, text)


def mask_phones(
    text: str, replacement: str | Callable[[str], str] = PHONE, *, region: str | None = None
) -> str:
    """Replace every valid phone number: international ones anywhere, national ones as
    numbers of ``region`` (settings.PHONE_DEFAULT_REGION by default)."""
    if len(_DIGITS_RE.findall(text)) < MIN_PHONE_DIGITS:
        return text
    region = region or settings.PHONE_DEFAULT_REGION
    spans = [
        (m.start, m.end)
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.STRICT_GROUPING)
    ]
    for start, end in reversed(spans):
        found = text[start:end]
        text = text[:start] + (replacement(found) if callable(replacement) else replacement) + text[end:]
    return text


def redact(text: str, *, region: str | None = None) -> str:
    """Mask emails, card numbers and phone numbers, in that order (an email or a card
    number may contain digit runs the phone matcher would otherwise take)."""
    if not text:
        return text
    return mask_phones(mask_cards(mask_emails(text)), region=region)


def partial_phone(found: str) -> str:
    """For logs: keep only the last two digits (enough to tell two numbers apart in support)."""
    digits = re.sub(r"\D", "", found)
    return f"[phone …{digits[-2:]}]"


def partial_email(found: str) -> str:
    local, _, domain = found.partition("@")
    return f"{local[:1]}•••@{domain}"


def mask_for_logs(text: str) -> str:
    """Partial masks keep log lines useful for support without exposing the contact."""
    return mask_phones(mask_cards(mask_emails(text, partial_email)), partial_phone)
