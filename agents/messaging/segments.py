"""SMS encoding and segment count, as carriers (and Twilio) count them.

A body that the GSM 03.38 default alphabet (with its extension table) can carry is sent
as GSM-7: 160 septets in one segment, 153 per segment when concatenated (the user data
header takes 7); extension characters (``€ [ ] { } \\ ~ ^ |``) cost two septets and are
never split across segments. Anything else is sent as UCS-2: 70 UTF-16 code units in one
segment, 67 per segment when concatenated, surrogate pairs (emoji) kept whole.

The character table comes from the maintained ``gsm0338`` codec (PyPI) rather than a
hand-copied table; the segment arithmetic is ours (no maintained package does it).
"""

from __future__ import annotations

from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


def _gsm_costs(text: str) -> list[int] | None:
    costs = []
    for char in text:
        try:
            costs.append(len(char.encode("gsm03.38")))
        except UnicodeEncodeError:
            return None
    return costs


def _ucs2_costs(text: str) -> list[int]:
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def _pack(costs: list[int], single: int, multi: int) -> int:
    total = sum(costs)
    if total <= single:
        return 1 if costs else 0
    segments, used = 1, 0
    for cost in costs:  # a two-unit character never straddles two segments
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def analyse(text: str) -> SegmentInfo:
    costs = _gsm_costs(text)
    if costs is not None:
        return SegmentInfo(GSM7, _pack(costs, 160, 153), sum(costs))
    costs = _ucs2_costs(text)
    return SegmentInfo(UCS2, _pack(costs, 70, 67), sum(costs))
