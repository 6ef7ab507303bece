"""Phone numbers, checked against libphonenumber's metadata and stored in E.164 (`+8613812345678`).

`phonenumbers` knows, country by country, which prefixes and lengths are numbers in use: a
mistyped mobile (10 or 12 digits) is refused at import, with its line, instead of being found
when an alert's SMS fails. Messages show a number only redacted: they end up in logs.

Most cells of a registry are bare national numbers (`13812345678`). For those, `_NationalPlan`
asks the same metadata the same questions `phonenumbers.is_valid_number` does (general pattern,
then one of the type patterns, each with its possible lengths) without `phonenumbers.parse`,
which costs ten times as much. It only ever says yes; anything it is not sure of, and every
refusal with its reason, goes through the full parse. tests/test_phone.py holds the two to the
same verdicts and E.164 output over many thousands of numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumberDesc,
    PhoneNumberFormat,
    ValidationResult,
)

from lovekey.redact import redact_phone

# what phonenumbers says about a string that does not parse, in the words of a registry error
_PARSE_PROBLEMS = {
    NumberParseException.INVALID_COUNTRY_CODE: "no country has that calling code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_LENGTH_PROBLEMS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits",
    ValidationResult.INVALID_COUNTRY_CODE: "no country has that calling code",
}
# what may separate the digits of a number the fast path reads: `138 1234 5678`, `138-1234-5678`
_SEPARATORS = str.maketrans("", "", " -")


def normalize_phone(raw: str, default_country_code: str = "86") -> str:
    """Return the E.164 form of a number in use, or raise ValueError saying what is wrong.

    `+86 138-1234-5678` and `0086 13812345678` carry their country code; a national number
    (`13812345678`, or `024 2345 6789` with its trunk 0) is read as one of the country whose
    calling code is `default_country_code`. Landlines, mobiles and service numbers are all
    accepted if phonenumbers holds them valid, not merely of a possible length.
    """
    plan = _national_plan(default_country_code)
    if plan is not None and (e164 := plan.e164(raw)) is not None:
        return e164
    return _parse_and_check(raw, default_country_code)


@dataclass(frozen=True, slots=True)
class _NationalPlan:
    """What phonenumbers would decide about a bare national number of one country, precompiled.

    A number qualifies when nothing in `phonenumbers.parse` would change its digits: it starts
    with neither the international prefix, nor the country code, nor a national (trunk or
    carrier) prefix, nor a 0. Its national significant number is then the digits themselves,
    and it is valid exactly when `_number_type_helper` would give it a type: it matches the
    general pattern and one type's pattern, each of a length the pattern allows.
    """

    country_code: str
    not_national: re.Pattern[str]  # a start that parse would strip or read as a country code
    valid: dict[int, re.Pattern[str]]  # by length: general pattern and any type's, as one regex

    def e164(self, raw: str) -> str | None:
        """`+<code><digits>` if the number is surely valid, else None (ask phonenumbers)."""
        digits = raw.strip().translate(_SEPARATORS)
        valid = self.valid.get(len(digits))
        if valid is None or not (digits.isascii() and digits.isdigit()) or self.not_national.match(digits):
            return None
        return f"+{self.country_code}{digits}" if valid.fullmatch(digits) else None


@cache  # one plan a country, built on first use
def _national_plan(country_code: str) -> _NationalPlan | None:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(int(country_code), ())
    if len(regions) != 1:
        return None  # a code shared by several countries (+1, +7): which one is phonenumbers' call
    metadata = PhoneMetadata.metadata_for_region(regions[0], None)
    if metadata is None or not _patterns(metadata.general_desc):
        return None
    starts = [re.escape(country_code), "0"]
    starts += [p for p in (metadata.international_prefix, metadata.national_prefix_for_parsing) if p]
    types = (
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
        metadata.mobile,
    )
    valid: dict[int, re.Pattern[str]] = {}
    for length, general in _patterns(metadata.general_desc).items():
        # a type without lengths of its own takes the general ones, as in _is_number_matching_desc
        of_type = [p for desc in types if (p := _patterns(desc, length).get(length))]
        if of_type:
            either = "|".join(f"(?:{p})" for p in of_type)
            valid[length] = re.compile(f"(?=(?:{general})\\Z)(?:{either})")
    return _NationalPlan(
        country_code=country_code,
        not_national=re.compile("|".join(f"(?:{start})" for start in starts)),
        valid=valid,
    )


def _patterns(desc: PhoneNumberDesc | None, default_length: int | None = None) -> dict[int, str]:
    """The desc's pattern under each length it allows; phonenumbers' empty pattern matches nothing."""
    if desc is None or not desc.national_number_pattern:
        return {}
    lengths = desc.possible_length or (() if default_length is None else (default_length,))
    return {length: desc.national_number_pattern for length in lengths if length > 0}


# A district file repeats its grid workers' and staff's numbers on thousands of rows, and one
# check costs about 40 us; a failed check raises and so is never cached.
@lru_cache(maxsize=65_536)
def _parse_and_check(raw: str, default_country_code: str) -> str:
    text = raw.strip()
    if any(c.isalpha() for c in text):
        # phonenumbers reads letters as a keypad (1-800-FLOWERS) and an `x12` as an extension;
        # neither can be sent an SMS, and in a registry file both are typos
        raise ValueError(
            f"malformed phone {_shown(text)}: only digits, spaces, dashes, brackets and a leading +"
        )
    region = phonenumbers.region_code_for_country_code(int(default_country_code))
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        problem = _PARSE_PROBLEMS.get(exc.error_type, "not a phone number")
        raise ValueError(f"malformed phone {_shown(text)}: {problem}") from exc
    if not phonenumbers.is_valid_number(number):
        length = phonenumbers.is_possible_number_with_reason(number)
        problem = _LENGTH_PROBLEMS.get(length, "no such number (wrong prefix or length)")
        raise ValueError(f"invalid phone {_shown(text)} for +{number.country_code}: {problem}")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _shown(text: str) -> str:
    return repr(redact_phone(text))
