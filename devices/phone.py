"""Phone numbers to E.164 (`+8613812345678`)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-().]")


def normalize_phone(raw: str, default_country_code: str = "86") -> str:
    """Return the E.164 form, or raise ValueError saying what is wrong.

    `+86 138-1234-5678` and `0086 13812345678` keep their country code; a national number
    (`13812345678`, or `010 1234 5678` with a trunk 0) takes `default_country_code`.
    """
    text = _SEPARATORS.sub("", raw.strip())
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    else:
        digits = default_country_code + text.removeprefix("0")
    if not digits.isdigit():
        raise ValueError(f"malformed phone {raw!r}: only digits, spaces, dashes and a leading +")
    if not 7 <= len(digits) <= 15:
        raise ValueError(f"malformed phone {raw!r}: {len(digits)} digits (E.164 allows 7 to 15)")
    return "+" + digits
