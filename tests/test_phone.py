"""The fast path for bare national numbers says what phonenumbers says, number for number.

The reference is phonenumbers itself: `parse` in the default country's region, then
`is_valid_number`, then `format_number(E164)`. The numbers are drawn at random (fixed seed) in
the shapes a registry holds: 11 digits starting 1, landlines with and without their trunk 0,
service numbers, `+86` and `0086` forms, spaces and dashes anywhere, and strings of any digits.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import NumberParseException, PhoneNumberFormat

from lovekey.devices.phone import _national_plan, normalize_phone

COUNTRY_CODES = ("86", "852", "886", "81", "49", "33", "91", "44", "1")


def reference(raw: str, country_code: str) -> str | None:
    """E.164 if phonenumbers holds the number valid, else None."""
    region = phonenumbers.region_code_for_country_code(int(country_code))
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def spaced(rng: random.Random, digits: str) -> str:
    """`digits` with spaces or dashes put in at random places, ends included."""
    out = [rng.choice(("", " ", "-")) if rng.random() < 0.3 else ""]
    for digit in digits:
        out.append(digit)
        if rng.random() < 0.25:
            out.append(rng.choice((" ", "-", "  ", "--", " - ")))
    return "".join(out)


def numbers(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)

    def run(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    shapes = [
        lambda: "1" + run(10),  # a mobile, or a typo of one
        lambda: "1" + run(rng.choice((6, 7, 8, 9, 11, 12))),
        lambda: rng.choice("3456789") + run(rng.randrange(6, 12)),
        lambda: "0" + rng.choice("123456789") + run(rng.randrange(7, 11)),  # landline, trunk 0
        lambda: rng.choice("23456789") + run(rng.randrange(6, 11)),  # landline without it
        lambda: rng.choice(("10", "21", "24", "755", "400", "800", "950", "86", "179")) + run(8),
        lambda: rng.choice(("+86", "+86 ", "0086", "0086 ", "86", "+852 ", "+1 ")) + "1" + run(10),
        lambda: spaced(rng, "1" + run(10)),
        lambda: spaced(rng, "0" + run(rng.randrange(8, 12))),
        lambda: run(rng.randrange(1, 18)),
    ]
    return [rng.choice(shapes)() for _ in range(count)]


# every 13x to 19x prefix, valid or not, so the fast path's yes-answers are many
MOBILES = [
    f"1{second}{third}{n:08d}" for second in "3456789" for third in "0123456789" for n in (0, 12345678)
]


@pytest.mark.parametrize("country_code", COUNTRY_CODES)
def test_the_fast_path_agrees_with_phonenumbers(country_code: str) -> None:
    plan = _national_plan(country_code)
    answered = 0
    for raw in numbers(seed=int(country_code), count=8_000) + MOBILES:
        expected = reference(raw, country_code)
        fast = plan.e164(raw) if plan is not None else None
        if fast is not None:
            answered += 1
            assert fast == expected, raw
        if expected is None:
            with pytest.raises(ValueError, match=r"(malformed|invalid) phone"):
                normalize_phone(raw, country_code)
        else:
            assert normalize_phone(raw, country_code) == expected, raw
    if country_code == "86":
        assert answered > 1_000  # the fast path does carry the common case


def test_codes_shared_by_several_countries_take_the_full_parse() -> None:
    assert _national_plan("1") is None  # US, Canada and the Caribbean
    assert _national_plan("44") is None  # the UK with Guernsey, Jersey and Man


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13812345678", "+8613812345678"),
        (" 138-1234-5678 ", "+8613812345678"),
        ("138 1234 5678", "+8613812345678"),
        ("1012345678", "+861012345678"),  # Beijing without its trunk 0
        ("4001234567", "+864001234567"),
    ],
)
def test_the_fast_path_reads_bare_national_numbers(raw: str, expected: str) -> None:
    plan = _national_plan("86")
    assert plan is not None
    assert plan.e164(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "024-2345-6789",  # trunk 0: phonenumbers strips it
        "+86 138 1234 5678",
        "0086 13812345678",  # the international prefix
        "8613812345678",  # starts with the country code
        "1795113812345678",  # a carrier selection code before the number
        "1381234567",  # invalid: the full parse says why
        "138.1234.5678",
        "(024) 2345 6789",
    ],
)
def test_anything_else_is_left_to_phonenumbers(raw: str) -> None:
    plan = _national_plan("86")
    assert plan is not None
    assert plan.e164(raw) is None
