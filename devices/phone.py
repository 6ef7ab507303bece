"""Phone numbers, checked against libphonenumber's metadata and stored in E.164 (`+8613812345678`).

`phonenumbers` knows, country by country, which prefixes and lengths are numbers in use: a
mistyped mobile (10 or 12 digits) is refused at import, with its line, instead of being found
when an alert's SMS fails. Messages show a number only redacted: they end up in logs.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

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


# A district file repeats its grid workers' and staff's numbers on thousands of rows, and one
# check costs about 40 us; a failed check raises and so is never cached.
@lru_cache(maxsize=65_536)
def normalize_phone(raw: str, default_country_code: str = "86") -> str:
    """Return the E.164 form of a number in use, or raise ValueError saying what is wrong.

    `+86 138-1234-5678` and `0086 13812345678` carry their country code; a national number
    (`13812345678`, or `024 2345 6789` with its trunk 0) is read as one of the country whose
    calling code is `default_country_code`. Landlines, mobiles and service numbers are all
    accepted if phonenumbers holds them valid, not merely of a possible length.
    """
    text = raw.strip()
    shown = repr(redact_phone(text))
    if any(c.isalpha() for c in text):
        # phonenumbers reads letters as a keypad (1-800-FLOWERS) and an `x12` as an extension;
        # neither can be sent an SMS, and in a registry file both are typos
        raise ValueError(f"malformed phone {shown}: only digits, spaces, dashes, brackets and a leading +")
    region = phonenumbers.region_code_for_country_code(int(default_country_code))
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        problem = _PARSE_PROBLEMS.get(exc.error_type, "not a phone number")
        raise ValueError(f"malformed phone {shown}: {problem}") from exc
    if not phonenumbers.is_valid_number(number):
        length = phonenumbers.is_possible_number_with_reason(number)
        problem = _LENGTH_PROBLEMS.get(length, "no such number (wrong prefix or length)")
        raise ValueError(f"invalid phone {shown} for +{number.country_code}: {problem}")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
