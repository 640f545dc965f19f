"""The console's CSV upload parser: good rows kept, every bad row reported with its line and reason."""

from __future__ import annotations

import pytest

from broadcasts.csvimport import CsvRefused, parse_recipients_csv


def lines(*rows: str, bom: bool = False) -> bytes:
    data = "\r\n".join(rows).encode() + b"\r\n"
    return b"\xef\xbb\xbf" + data if bom else data


def test_good_rows_become_recipients_with_their_variables_and_bom_is_tolerated():
    parsed = parse_recipients_csv(
        lines("Phone,first_name, city ", "+1 415 555 0101,Ann,Paris", "+442079460958,Bob,London", bom=True),
        channel="sms",
    )
    assert parsed.address_column == "Phone"
    assert parsed.variables == ["first_name", "city"]
    assert parsed.recipients == [
        {"to": "+14155550101", "variables": {"first_name": "Ann", "city": "Paris"}, "line": 2},
        {"to": "+442079460958", "variables": {"first_name": "Bob", "city": "London"}, "line": 3},
    ]
    assert parsed.rejected == [] and parsed.rejected_total == 0


def test_each_bad_row_is_reported_with_its_line_and_reason():
    data = (
        b"to,name\r\n"  # 1
        b"+14155550101,Ann\r\n"  # 2 good
        b"12,Bad\r\n"  # 3 bad number
        b",Nobody\r\n"  # 4 missing
        b"+1 (415) 555-0101,Ann again\r\n"  # 5 duplicate of 2 after normalising
        b"+14155550102,Carl,extra\r\n"  # 6 too many columns
        b"+14155550103\r\n"  # 7 too few columns
        b"+14155550104,D\xe9sir\xe9e\r\n"  # 8 Latin-1 bytes
        b"\r\n"  # 9 blank: skipped, not reported
        b'+14155550105,"Multi\r\nline"\r\n'  # 10-11 good, a quoted newline
        b"+14155550106,Eve\r\n"  # 12 good
    )
    parsed = parse_recipients_csv(data, channel="sms")
    assert [(r["to"], r["line"]) for r in parsed.recipients] == [
        ("+14155550101", 2),
        ("+14155550105", 10),
        ("+14155550106", 12),
    ]
    assert parsed.recipients[1]["variables"] == {"name": "Multi\r\nline"}
    reasons = {r["line"]: (r["address"], r["reason"]) for r in parsed.rejected}
    assert reasons[3][0] == "12" and reasons[3][1].startswith("bad phone number")
    assert reasons[4] == ("", "missing address")
    assert reasons[5] == ("+1 (415) 555-0101", "duplicate of line 2")
    assert reasons[6] == ("+14155550102", "too many columns (3; the header has 2)")
    assert reasons[7] == ("+14155550103", "too few columns (1; the header has 2)")
    assert reasons[8][1].startswith("undecodable bytes")
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8] and parsed.rejected_total == 6


def test_email_channel_reads_the_email_column_and_checks_addresses():
    parsed = parse_recipients_csv(
        lines("name,Email", "Ann,ann@Example.COM", "Bob,not-an-address", "Ann2,ann@example.com"),
        channel="email",
    )
    assert [r["to"] for r in parsed.recipients] == ["ann@example.com"]
    assert parsed.rejected == [
        {"line": 3, "address": "not-an-address", "reason": "bad email address"},
        {"line": 4, "address": "ann@example.com", "reason": "duplicate of line 2"},
    ]


@pytest.mark.parametrize(
    ("data", "channel", "message"),
    [
        (b"", "sms", "the file is empty"),
        (
            lines("name,city", "Ann,Paris"),
            "sms",
            "no address column: a sms broadcast needs a column named phone or to",
        ),
        (lines("phone,name,Name", "+14155550101,a,b"), "sms", "names Name, name more than once"),
        (lines("phone,,x", "+14155550101,a,b"), "sms", "column 2 of the header row has no name"),
        (lines("phone", "+14155550101"), "voice", "channel must be one of"),
        (b"ph\xffone\r\n+14155550101\r\n", "sms", "not UTF-8"),
    ],
)
def test_a_file_that_is_no_recipient_list_is_refused_whole(data, channel, message):
    with pytest.raises(CsvRefused, match=message.replace("(", r"\(")):
        parse_recipients_csv(data, channel=channel)


def test_size_and_row_limits():
    with pytest.raises(CsvRefused, match="the limit is 100"):
        parse_recipients_csv(b"phone\r\n" + b"+14155550101\r\n" * 10, channel="sms", max_bytes=100)
    rows = [f"+1415555{n:04d}" for n in range(101, 106)]
    with pytest.raises(CsvRefused, match="more than 4 recipient rows"):
        parse_recipients_csv(lines("phone", *rows), channel="sms", max_rows=4)
    assert len(parse_recipients_csv(lines("phone", *rows), channel="sms", max_rows=5).recipients) == 5


def test_variables_the_body_uses_must_have_a_column_and_a_value():
    data = lines("phone,first_name,city", "+14155550101,Ann,Paris", "+14155550102,,Rome", "+14155550103,Cy,")
    parsed = parse_recipients_csv(data, channel="sms", required={"first_name"})
    assert [r["line"] for r in parsed.recipients] == [2, 4]  # city is not used: empty is fine
    assert parsed.rejected == [
        {"line": 3, "address": "+14155550102", "reason": "missing variable(s): first_name"}
    ]
    with pytest.raises(CsvRefused, match="the body uses country, but the file has no column of that name"):
        parse_recipients_csv(data, channel="sms", required={"first_name", "country"})
