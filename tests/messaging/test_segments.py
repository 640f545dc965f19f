import pytest

from agents.messaging.segments import GSM7, UCS2, analyse


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("é" * 160, GSM7, 1),  # é is in the GSM 03.38 default alphabet
        ("€" * 80, GSM7, 1),  # extension characters cost two septets
        ("€" * 81, GSM7, 2),
        ("a" * 152 + "€", GSM7, 1),
        ("a" * 160 + "€", GSM7, 2),
        ("a" * 152 + "€" + "a" * 10, GSM7, 2),  # the escape pair is not split
        ("ç" * 70, UCS2, 1),  # lower-case ç is not GSM-7
        ("ç" * 71, UCS2, 2),
        ("😀" * 35, UCS2, 1),  # surrogate pairs: two code units each
        ("😀" * 36, UCS2, 2),
        ("a" * 66 + "😀" + "a" * 3, UCS2, 2),
    ],
)
def test_encoding_and_segments(text, encoding, segments):
    info = analyse(text)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_escape_pair_never_straddles_two_segments():
    # 152 septets then an escape pair: the pair cannot fit in 153, so a third segment opens.
    text = "a" * 153 + "a" * 152 + "€"
    assert analyse(text).segments == 3
