"""Recipients of a broadcast from an uploaded CSV file (the console's upload, issue 19).

The file has a header row. One column holds the address — ``phone`` or ``to`` for SMS and
WhatsApp, ``email`` or ``to`` for email, ``contact_id`` for notify (routing picks the contact's
channel; case and spaces ignored) — and every other column becomes a per-recipient variable of
the body (``{{ first_name }}``). UTF-8, with or without a byte-order mark (Excel writes one).
Email addresses are lower-cased whole, as the dossiers store and match them, so
``Ada@Example.org`` and ``ada@example.org`` are one recipient.

Parsing never raises for a bad row: each one is reported with its line number (the header is
line 1; a quoted field spanning lines counts from the line the row starts on) and a reason,
and the good rows are kept. Only a file that cannot be read as a recipient list at all (too
large, no header, no address column, a header naming a column twice) is refused as a whole,
with ``CsvRefused``.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from broadcasts.addresses import normalize
from dossiers.models import Contact
from dossiers.services import InvalidPhoneNumber

MAX_BYTES = 16 * 1024 * 1024  # 100,000 rows of a few columns fit well under it
MAX_ROWS = 100_000  # the most recipients one broadcast accepts (issue 19)
MAX_REPORTED = 1_000  # bad rows listed one by one; past that they are only counted

ADDRESS_COLUMNS = {
    "sms": ("phone", "to"),
    "whatsapp": ("phone", "whatsapp", "to"),
    "email": ("email", "to"),
    "notify": ("contact_id",),
}
CONTACT_CHUNK = 5_000


class CsvRefused(ValueError):
    """The whole file is refused; the message says why, in words an operator can act on."""


@dataclass
class ParsedCsv:
    """The good recipients (``{"to", "variables", "line"}``) and the bad rows
    (``{"line", "address", "reason"}``), in file order."""

    address_column: str
    variables: list[str]
    recipients: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0  # rejected may stop listing at MAX_REPORTED; this keeps counting

    def reject(self, line: int, address: str, reason: str) -> None:
        self.rejected_total += 1
        if len(self.rejected) < MAX_REPORTED:
            self.rejected.append({"line": line, "address": address[:80], "reason": reason})


def parse_recipients_csv(
    data: bytes,
    *,
    channel: str,
    required: set[str] | frozenset[str] = frozenset(),
    max_bytes: int = MAX_BYTES,
    max_rows: int = MAX_ROWS,
) -> ParsedCsv:
    """Read ``data`` (the uploaded file's bytes) as recipients of a broadcast on ``channel``.

    ``required`` names the variables the body uses: the file must have a column for each, and a
    row with one of them empty is a bad row (its message could not be written)."""
    if channel not in ADDRESS_COLUMNS:
        raise CsvRefused(f"channel must be one of {', '.join(ADDRESS_COLUMNS)}, not {channel!r}")
    if len(data) > max_bytes:
        raise CsvRefused(f"the file is {len(data):,} bytes; the limit is {max_bytes:,}")
    # Undecodable bytes are kept as lone surrogates so that only their rows are refused.
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, line = _header(reader)
    address_at, address_column = _address_column(header, channel)
    names = [(i, name) for i, name in enumerate(header) if i != address_at]
    absent = sorted(set(required) - {name for _, name in names})
    if absent:
        raise CsvRefused(f"the body uses {', '.join(absent)}, but the file has no column of that name")
    parsed = ParsedCsv(address_column=address_column, variables=[name for _, name in names])
    seen: dict[str, int] = {}
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            line = reader.line_num
            parsed.reject(start, "", f"unreadable CSV ({exc})")
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines are not recipients
        if len(parsed.recipients) + parsed.rejected_total >= max_rows:
            raise CsvRefused(f"the file has more than {max_rows:,} recipient rows")
        raw = row[address_at].strip() if address_at < len(row) else ""
        reason = _row_problem(row, len(header))
        address = ""
        if reason is None:
            address, reason = _address(raw, channel)
        variables = {name: row[i].strip() for i, name in names} if reason is None else {}
        if reason is None and address in seen:
            reason = f"duplicate of line {seen[address]}"
        if reason is None and (empty := sorted(name for name in required if not variables[name])):
            reason = f"missing variable(s): {', '.join(empty)}"
        if reason is not None:
            parsed.reject(start, _printable(raw), reason)
            continue
        seen[address] = start
        recipient = {"to": address, "variables": variables, "line": start}
        if channel == "notify":
            recipient["contact_id"] = address
        parsed.recipients.append(recipient)
    if channel == "notify":
        _reject_unknown_contacts(parsed)
    return parsed


def _reject_unknown_contacts(parsed: ParsedCsv) -> None:
    """A notify row whose contact does not exist is a bad row (one IN query per 5,000 rows)."""
    known: set[str] = set()
    ids = [r["contact_id"] for r in parsed.recipients]
    for start in range(0, len(ids), CONTACT_CHUNK):
        chunk = ids[start : start + CONTACT_CHUNK]
        known.update(str(i) for i in Contact.objects.filter(id__in=chunk).values_list("id", flat=True))
    unknown = [r for r in parsed.recipients if r["contact_id"] not in known]
    for row in unknown:
        parsed.reject(row["line"], row["contact_id"], "no such contact")
    if unknown:
        parsed.recipients = [r for r in parsed.recipients if r["contact_id"] in known]
        parsed.rejected.sort(key=lambda r: r["line"])


def _header(reader: Any) -> tuple[list[str], int]:
    try:
        header = next(reader)
    except StopIteration:
        raise CsvRefused("the file is empty: it needs a header row and one row per recipient") from None
    except csv.Error as exc:
        raise CsvRefused(f"the header row is not readable CSV ({exc})") from None
    header = [name.strip() for name in header]
    if any(_has_undecodable(name) for name in header):
        raise CsvRefused("the header row is not UTF-8 text: save the file as CSV UTF-8")
    if "" in header:
        raise CsvRefused(f"column {header.index('') + 1} of the header row has no name")
    doubled = sorted({name for name in header if [h.lower() for h in header].count(name.lower()) > 1})
    if doubled:
        raise CsvRefused(f"the header row names {', '.join(doubled)} more than once")
    return header, reader.line_num


def _address_column(header: list[str], channel: str) -> tuple[int, str]:
    lowered = [name.lower() for name in header]
    for wanted in ADDRESS_COLUMNS[channel]:
        if wanted in lowered:
            return lowered.index(wanted), header[lowered.index(wanted)]
    names = " or ".join(ADDRESS_COLUMNS[channel])
    raise CsvRefused(f"no address column: a {channel} broadcast needs a column named {names}")


def _row_problem(row: list[str], width: int) -> str | None:
    if any(_has_undecodable(cell) for cell in row):
        return "undecodable bytes (the file is not UTF-8 on this line)"
    if len(row) > width:
        return f"too many columns ({len(row)}; the header has {width})"
    if len(row) < width:
        return f"too few columns ({len(row)}; the header has {width})"
    return None


def _address(raw: str, channel: str) -> tuple[str, str | None]:
    """The normalised address (E.164, an email address lower-cased, a contact id), or why not."""
    if not raw:
        return "", "missing address"
    if channel == "email":
        try:
            validate_email(raw)
        except ValidationError:
            return "", "bad email address"
        return raw.lower(), None
    if channel == "notify":
        try:
            return str(uuid.UUID(raw)), None
        except ValueError:
            return "", "not a contact id (a UUID)"
    try:
        return normalize(raw), None
    except InvalidPhoneNumber:
        return "", "bad phone number (give it in international form, +<country code>…)"


def _has_undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _printable(text: str) -> str:
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
