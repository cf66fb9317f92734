"""The vocabulary of validation: field statuses, reason codes and their meanings.

Rule expressions (`identifiers`, `clinical_codes`) classify a field into a lower-case
status; quarantine and data-quality tables record the upper-case reason code mapped from
it here, so every table speaks the same vocabulary and a code's meaning is looked up in one
place (`MEANINGS`). The helpers at the end are what the rules share: what counts as
missing, how checks become a status (`classify`) and a status a reason code (`reason`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

# Field statuses, as returned by the `*_status` rule expressions.
VALID = "valid"
MISSING = "missing"  # null or blank
BAD_FORMAT = "bad_format"  # not shaped like the field at all
BAD_CHECK = "bad_check"  # well formed, but the check digit is wrong
PLACEHOLDER = "placeholder"  # a well-formed default that stands for "unknown"
TEST_RANGE = "test_range"  # reserved for testing, never issued to a person
BAD_DATE = "bad_date"  # not a real YYYY-MM-DD date
OUT_OF_RANGE = "out_of_range"  # a real value outside the plausible range
BAD_CODE = "bad_code"  # not one of the field's permitted codes
PSEUDO = "pseudo"  # a pseudo-postcode: well formed but carries no address

# Reason codes: identifiers.
NHS_MISSING = "NHS_MISSING"
NHS_BAD_FORMAT = "NHS_BAD_FORMAT"
NHS_BAD_CHECK = "NHS_BAD_CHECK"
NHS_PLACEHOLDER = "NHS_PLACEHOLDER"
NHS_TEST_RANGE = "NHS_TEST_RANGE"
DOB_MISSING = "DOB_MISSING"
DOB_BAD_DATE = "DOB_BAD_DATE"
DOB_PLACEHOLDER = "DOB_PLACEHOLDER"
DOB_OUT_OF_RANGE = "DOB_OUT_OF_RANGE"
SEX_MISSING = "SEX_MISSING"
SEX_BAD_CODE = "SEX_BAD_CODE"
POSTCODE_MISSING = "POSTCODE_MISSING"
POSTCODE_BAD_FORMAT = "POSTCODE_BAD_FORMAT"
POSTCODE_PSEUDO = "POSTCODE_PSEUDO"
# Reason codes: clinical codes.
ICD10_BAD_FORMAT = "ICD10_BAD_FORMAT"
OPCS4_BAD_FORMAT = "OPCS4_BAD_FORMAT"
SNOMED_MISSING = "SNOMED_MISSING"
SNOMED_BAD_FORMAT = "SNOMED_BAD_FORMAT"
SNOMED_BAD_CHECK = "SNOMED_BAD_CHECK"
# Reason codes: records as a whole (decided by ingest).
MALFORMED_ROW = "MALFORMED_ROW"
REQUIRED_MISSING = "REQUIRED_MISSING"
DATE_BAD = "DATE_BAD"
DATE_FUTURE = "DATE_FUTURE"
DATES_OUT_OF_ORDER = "DATES_OUT_OF_ORDER"
VALUE_NOT_NUMERIC = "VALUE_NOT_NUMERIC"
DUPLICATE_KEY = "DUPLICATE_KEY"
PROVIDER_NOT_SUBMITTER = "PROVIDER_NOT_SUBMITTER"
TYPE1_OBJECTION = "TYPE1_OBJECTION"

MEANINGS: Mapping[str, str] = {
    NHS_MISSING: "no NHS number (null or blank)",
    NHS_BAD_FORMAT: "NHS number is not 10 digits once spaces are removed",
    NHS_BAD_CHECK: "NHS number fails its Modulus 11 check digit (or its check would be 10)",
    NHS_PLACEHOLDER: "NHS number is one digit ten times: a placeholder, treated as missing",
    NHS_TEST_RANGE: "NHS number is in the 999 test range, never issued: treated as missing",
    DOB_MISSING: "no date of birth (null or blank)",
    DOB_BAD_DATE: "date of birth is not a real YYYY-MM-DD date",
    DOB_PLACEHOLDER: "date of birth is a placeholder (1900-01-01, 1800-01-01): treated as missing",
    DOB_OUT_OF_RANGE: "date of birth is before 1895-01-01, or after the record's activity date or today",
    SEX_MISSING: "no sex code (null or blank)",
    SEX_BAD_CODE: "sex is not a person gender code (1, 2, 9, 0)",
    POSTCODE_MISSING: "no postcode (null or blank)",
    POSTCODE_BAD_FORMAT: "postcode is not shaped like a UK postcode",
    POSTCODE_PSEUDO: "pseudo-postcode (ZZ...): no address, not used for linkage",
    ICD10_BAD_FORMAT: "diagnosis is not a dotless ICD-10 code (letter, 2 digits, 0-2 more)",
    OPCS4_BAD_FORMAT: "operation is not an OPCS-4 code (letter and 3 digits)",
    SNOMED_MISSING: "no SNOMED CT code (null or blank)",
    SNOMED_BAD_FORMAT: "SNOMED CT code is not a 6-18 digit identifier with a valid partition",
    SNOMED_BAD_CHECK: "SNOMED CT identifier fails its Verhoeff check digit",
    MALFORMED_ROW: "the line could not be parsed into the dataset's columns",
    REQUIRED_MISSING: "a field the dataset requires is missing or unusable",
    DATE_BAD: "an event or episode date is not a real YYYY-MM-DD date",
    DATE_FUTURE: "the record's activity date (event, registration, admission, appointment, arrival) is after today",
    DATES_OUT_OF_ORDER: "episode dates are out of order (e.g. admission after discharge)",
    VALUE_NOT_NUMERIC: "an event value is present but not a plain decimal number (NaN, Infinity, 1d, 0x1p3, 1e400 are not)",
    DUPLICATE_KEY: "the record key repeats an earlier line of the same submission",
    PROVIDER_NOT_SUBMITTER: "the row's practice or provider code is not its file's submitter (nor, in HES, one of its sites)",
    TYPE1_OBJECTION: "patient has a type 1 objection in force: dropped at the door, only counted",
}

# Which reason each non-valid status of a field records.
NHS_NUMBER_REASONS: Mapping[str, str] = {
    MISSING: NHS_MISSING,
    BAD_FORMAT: NHS_BAD_FORMAT,
    BAD_CHECK: NHS_BAD_CHECK,
    PLACEHOLDER: NHS_PLACEHOLDER,
    TEST_RANGE: NHS_TEST_RANGE,
}
DOB_REASONS: Mapping[str, str] = {
    MISSING: DOB_MISSING,
    BAD_DATE: DOB_BAD_DATE,
    PLACEHOLDER: DOB_PLACEHOLDER,
    OUT_OF_RANGE: DOB_OUT_OF_RANGE,
}
SEX_REASONS: Mapping[str, str] = {MISSING: SEX_MISSING, BAD_CODE: SEX_BAD_CODE}
POSTCODE_REASONS: Mapping[str, str] = {
    MISSING: POSTCODE_MISSING,
    BAD_FORMAT: POSTCODE_BAD_FORMAT,
    PSEUDO: POSTCODE_PSEUDO,
}
SNOMED_REASONS: Mapping[str, str] = {
    MISSING: SNOMED_MISSING,
    BAD_FORMAT: SNOMED_BAD_FORMAT,
    BAD_CHECK: SNOMED_BAD_CHECK,
}

WHITESPACE = " \t\r\n\u00a0"  # what spreadsheets and extracts pad fields with


def stripped(col: Column) -> Column:
    """The value without surrounding whitespace, which extracts add and no field means."""
    return F.btrim(col, F.lit(WHITESPACE))  # trim(col, chars) is deprecated in Spark 4


def is_blank(value: Column) -> Column:
    """Null or empty: what every rule counts as missing."""
    return value.isNull() | (value == F.lit(""))


def classify(missing: Column, failures: Sequence[tuple[str, Column]]) -> Column:
    """A field's status: missing, else the status of the first failed check, else valid.

    `failures` are (status, failed) pairs tried in order. CASE WHEN is lazy, so a costly
    later check (a check digit) only runs on values that passed the earlier ones. Callers
    make every condition refer to the same normalised value (and so does `missing`): Spark
    then computes that value once per row, however many checks read it (subexpression
    elimination only shares what all conditions of a CASE have in common).
    """
    status = F.when(missing, F.lit(MISSING))
    for name, failed in failures:
        status = status.when(failed, F.lit(name))
    return status.otherwise(F.lit(VALID))


def reason(status: Column, reasons: Mapping[str, str]) -> Column:
    """Reason code recorded for a field's status (e.g. `NHS_NUMBER_REASONS`); null when valid."""
    codes = F.create_map(*(F.lit(text) for pair in reasons.items() for text in pair))
    return F.try_element_at(codes, status)


def passes(status: Column, reasons: Mapping[str, str]) -> Column:
    """True when a field's status records no reason code, i.e. the field is valid.

    Deliberately not `status == 'valid'`: the optimiser pushes a comparison into the CASE
    branches of the status, after which Spark no longer sees the status as the expression
    inside `reason(...)`. Going through `reason` keeps them identical, so a rule's reason
    code and its clean value share one evaluation per row (subexpression elimination).
    """
    return reason(status, reasons).isNull()
