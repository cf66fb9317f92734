"""Validation and normalisation of the four person identifiers, as built-in Spark expressions.

NHS number, date of birth, sex and postcode (shared/reference/identifiers.md). Each function
maps a raw string Column to a Column, so the optimiser and the JVM do the work and a rule
costs no Python round trip. Nothing here can throw on bad data: under ANSI mode a failing
cast would quote the offending value, an identifier, into an exception and the event log.
Nor does any plan carry an identifier: the only literals are rules (patterns, ranges, dates).

Statuses and their reason codes are in `caredata_spark.reasons`.
"""

from __future__ import annotations

import datetime as dt
import operator
from functools import reduce

from pyspark.sql import Column
from pyspark.sql import functions as F

from caredata_spark.reasons import (
    BAD_CHECK,
    BAD_CODE,
    BAD_DATE,
    BAD_FORMAT,
    OUT_OF_RANGE,
    PLACEHOLDER,
    PSEUDO,
    TEST_RANGE,
    DOB_REASONS,
    NHS_NUMBER_REASONS,
    WHITESPACE,
    classify,
    is_blank,
    passes,
    stripped,
)

NHS_NUMBER_PATTERN = r"^[0-9]{10}$"
SAME_DIGIT_PATTERN = r"^([0-9])\1*$"
NHS_TEST_PREFIX = "999"  # 999 000 0000 - 999 999 9999

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DOB_PLACEHOLDERS = (dt.date(1900, 1, 1), dt.date(1800, 1, 1))
EARLIEST_DOB = dt.date(1895, 1, 1)

SEX_CODES = ("1", "2", "9", "0")  # male, female, not specified, not known

# Postcode shape without the space: outward A9, A99, AA9, AA99, A9A, AA9A; inward 9AA.
# Only the shape is checked, so pseudo-postcodes (ZZ99 3CZ) are recognised too.
PSEUDO_POSTCODE_PREFIX = "ZZ"
_POSTCODE_SHAPE = r"[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}|GIR0AA"
POSTCODE_PATTERN = rf"^(?:{_POSTCODE_SHAPE})$"
ADDRESS_POSTCODE_PATTERN = rf"^(?!{PSEUDO_POSTCODE_PREFIX})(?:{_POSTCODE_SHAPE})$"


# --- NHS number ---------------------------------------------------------------------------


def nhs_digits(col: Column) -> Column:
    """The number with all whitespace removed ('943 476 5919' is common).

    Shared by the rules and by ingest's typo-tolerant digits, so both strip the same
    characters (a no-break space included) and a valid number always yields 10 digits.
    """
    return F.translate(col, WHITESPACE, "")


def _digit(digits: Column, position: int) -> Column:
    """Digit at a 1-based position; try_cast so a stray character yields null, never an error."""
    return F.substring(digits, position, 1).try_cast("int")


def _fails_modulus_11(digits: Column) -> Column:
    """Modulus 11: weights 10..2 on digits 1-9, check = (11 - sum mod 11) mod 11.

    A check of 10 matches no digit, so numbers that would need it fail, as they should.
    """
    weighted = reduce(operator.add, (_digit(digits, i) * (11 - i) for i in range(1, 10)))
    check = (F.lit(11) - weighted % 11) % 11
    return check != _digit(digits, 10)


def nhs_number_status(col: Column) -> Column:
    """valid, missing, bad_format, placeholder, test_range or bad_check, in that precedence.

    The test range comes before the check: it is never issued, so the reference treats it
    as missing, and a 999 number failing the check must not be kept as a mistyped real one
    (ingest keeps bad-check digits for typo-tolerant linkage). Placeholders (one digit
    repeated) pass Modulus 11 by construction, and 9999999999 is both a placeholder and in
    the test range: it is reported as a placeholder.
    """
    digits = nhs_digits(col)
    return classify(
        is_blank(digits),
        [
            (BAD_FORMAT, ~digits.rlike(NHS_NUMBER_PATTERN)),
            (PLACEHOLDER, digits.rlike(SAME_DIGIT_PATTERN)),
            (TEST_RANGE, digits.startswith(NHS_TEST_PREFIX)),
            (BAD_CHECK, _fails_modulus_11(digits)),
        ],
    )


def clean_nhs_number(col: Column) -> Column:
    """The 10 digits when the number is valid, else null: what linkage may use."""
    return F.when(passes(nhs_number_status(col), NHS_NUMBER_REASONS), nhs_digits(col))


# --- Dates and date of birth ----------------------------------------------------------------


def parse_date(col: Column) -> Column:
    """Date of a strict YYYY-MM-DD string (surrounding whitespace allowed), else null.

    regexp_extract yields '' unless the whole value is YYYY-MM-DD (so '2024-2-3' and
    '20240203' fail), and try_cast turns that, or an impossible date ('2024-02-30'), into
    null; neither step can raise, unlike an ANSI cast. No CASE WHEN, so rules that test the
    parsed date several times still parse it once per row (subexpression elimination).
    """
    return F.regexp_extract(stripped(col), DATE_PATTERN, 0).try_cast("date")


def _as_date_column(value: dt.date | Column) -> Column:
    return value if isinstance(value, Column) else F.lit(value)


def dob_status(col: Column, data_year_end: dt.date | Column) -> Column:
    """valid, missing, bad_date, placeholder or out_of_range (before 1895 or after year end).

    Placeholders are checked before the range, so 1800-01-01 reports as a placeholder. A null
    `data_year_end` leaves the upper bound unchecked.
    """
    dob = parse_date(col)
    year_end = _as_date_column(data_year_end)
    # `dob.isNull() &` changes nothing (a blank never parses) but puts the parsed date in
    # every condition, so Spark parses it once per row.
    return classify(
        dob.isNull() & is_blank(stripped(col)),
        [
            (BAD_DATE, dob.isNull()),
            (PLACEHOLDER, dob.isin(*DOB_PLACEHOLDERS)),
            (OUT_OF_RANGE, (dob < F.lit(EARLIEST_DOB)) | (dob > year_end)),
        ],
    )


def clean_dob(col: Column, data_year_end: dt.date | Column) -> Column:
    """The date of birth when valid, else null (placeholders count as missing)."""
    return F.when(passes(dob_status(col, data_year_end), DOB_REASONS), parse_date(col))


# --- Sex ------------------------------------------------------------------------------------


def sex_code(col: Column) -> Column:
    """The person gender code '1', '2', '9' or '0' (surrounding whitespace removed), else null."""
    code = stripped(col)
    return F.when(code.isin(*SEX_CODES), code)


def sex_status(col: Column) -> Column:
    """valid, missing or bad_code. '9' and '0' are valid codes that say nothing about sex."""
    code = stripped(col)
    return classify(is_blank(code), [(BAD_CODE, ~code.isin(*SEX_CODES))])


# --- Postcode -------------------------------------------------------------------------------


def _compact_postcode(col: Column) -> Column:
    """Upper case with every space removed: 'ls1  4ab' -> 'LS14AB'."""
    return F.upper(F.translate(col, WHITESPACE, ""))


def _spaced(compact: Column) -> Column:
    """One space before the 3-character inward code: 'LS14AB' -> 'LS1 4AB'."""
    return F.regexp_replace(compact, r"^(.+)(.{3})$", "$1 $2")


def normalise_postcode(col: Column) -> Column:
    """'LS1 4AB' form when postcode-shaped, else null; blind to case and spacing, idempotent.

    Pseudo-postcodes are normalised too (they are postcode-shaped); `linkable_postcode` is
    the form that drops them.
    """
    compact = _compact_postcode(col)
    return F.when(compact.rlike(POSTCODE_PATTERN), _spaced(compact))


def is_pseudo_postcode(col: Column) -> Column:
    """True for ZZ... pseudo-postcodes (not stated, no fixed abode, not known); null for null."""
    return _compact_postcode(col).startswith(PSEUDO_POSTCODE_PREFIX)


def postcode_status(col: Column) -> Column:
    """valid, missing, bad_format or pseudo."""
    compact = _compact_postcode(col)
    return classify(
        is_blank(compact),
        [
            (BAD_FORMAT, ~compact.rlike(POSTCODE_PATTERN)),
            (PSEUDO, compact.startswith(PSEUDO_POSTCODE_PREFIX)),
        ],
    )


def linkable_postcode(col: Column) -> Column:
    """The normalised postcode when it names an address; null for pseudo or unshaped ones.

    Pseudo-postcodes are shared by unrelated people (everyone of no fixed abode), so they
    must never make two records look like the same person.
    """
    compact = _compact_postcode(col)
    return F.when(compact.rlike(ADDRESS_POSTCODE_PATTERN), _spaced(compact))


def outward_code(normalised: Column) -> Column:
    """Outward code ('LS1' of 'LS1 4AB') of a postcode already in normalised form."""
    return F.substring_index(normalised, " ", 1)


def postcode_district(col: Column) -> Column:
    """Outward code ('LS1' of 'LS1 4AB'); null when the postcode names no address."""
    return outward_code(linkable_postcode(col))
