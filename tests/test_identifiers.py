"""Identifier rules on real Spark: every status on hand-written rows, then properties.

Each test is one DataFrame of many rows (input and expected columns side by side), so a
rule costs one Spark job, not one per case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from chispa import assert_column_equality, assert_df_equality
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons
from caredata_spark.identifiers import (
    clean_dob,
    clean_nhs_number,
    dob_status,
    is_pseudo_postcode,
    linkable_postcode,
    nhs_number_status,
    normalise_postcode,
    parse_date,
    postcode_district,
    postcode_status,
    sex_code,
    sex_status,
)
from caredata_spark.reasons import (
    BAD_CHECK,
    BAD_CODE,
    BAD_DATE,
    BAD_FORMAT,
    MISSING,
    OUT_OF_RANGE,
    PLACEHOLDER,
    PSEUDO,
    TEST_RANGE,
    VALID,
)

YEAR_END = dt.date(2024, 3, 31)
FEW = settings(max_examples=10, deadline=None)
# Arbitrary text Spark can hold (no lone surrogates, which UTF-8 cannot encode).
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


def assert_rules(df: DataFrame, source: str, **rules: Callable[[Column], Column]) -> None:
    """Each rule applied to column `source` equals the expected column of the same name."""
    actual = df.select(source, *(rule(F.col(source)).alias(name) for name, rule in rules.items()))
    assert_df_equality(actual, df.select(source, *rules), ignore_nullable=True)


def modulus_11_check(nine_digits: str) -> int:
    """Plain-Python check digit (10 means no valid number has these first nine digits)."""
    total = sum(int(d) * w for d, w in zip(nine_digits, range(10, 1, -1)))
    return (11 - total % 11) % 11


def with_check_digit(nine_digits: str) -> str | None:
    check = modulus_11_check(nine_digits)
    return None if check == 10 else nine_digits + str(check)


# --- NHS number -----------------------------------------------------------------------------


def test_nhs_number_every_status(spark: SparkSession) -> None:
    assert modulus_11_check("123456789") == 10  # so 1234567890 can never be valid
    rows = [
        ("9434765919", VALID, "9434765919", None),  # identifiers.md example
        ("943 476 5919", VALID, "9434765919", None),
        (" 9434765919\t", VALID, "9434765919", None),
        ("9876544321", BAD_CHECK, None, reasons.NHS_BAD_CHECK),  # identifiers.md example
        ("9434765918", BAD_CHECK, None, reasons.NHS_BAD_CHECK),
        ("1234567890", BAD_CHECK, None, reasons.NHS_BAD_CHECK),  # check would be 10
        ("9990000019", TEST_RANGE, None, reasons.NHS_TEST_RANGE),  # test range wins over the check
        (None, MISSING, None, reasons.NHS_MISSING),
        ("", MISSING, None, reasons.NHS_MISSING),
        ("   ", MISSING, None, reasons.NHS_MISSING),
        ("943476591", BAD_FORMAT, None, reasons.NHS_BAD_FORMAT),
        ("94347659190", BAD_FORMAT, None, reasons.NHS_BAD_FORMAT),
        ("943476591X", BAD_FORMAT, None, reasons.NHS_BAD_FORMAT),
        ("943-476-5919", BAD_FORMAT, None, reasons.NHS_BAD_FORMAT),
        ("\uff19434765919", BAD_FORMAT, None, reasons.NHS_BAD_FORMAT),  # full-width digit
        ("0000000000", PLACEHOLDER, None, reasons.NHS_PLACEHOLDER),
        ("4444444444", PLACEHOLDER, None, reasons.NHS_PLACEHOLDER),
        ("9999999999", PLACEHOLDER, None, reasons.NHS_PLACEHOLDER),
        ("9990000018", TEST_RANGE, None, reasons.NHS_TEST_RANGE),
        ("999 000 0018", TEST_RANGE, None, reasons.NHS_TEST_RANGE),
    ]
    df = spark.createDataFrame(rows, "nhs string, status string, clean string, reason string")
    assert_rules(
        df,
        "nhs",
        status=nhs_number_status,
        clean=clean_nhs_number,
        reason=lambda c: reasons.reason(nhs_number_status(c), reasons.NHS_NUMBER_REASONS),
    )


NINE_DIGITS = st.text("0123456789", min_size=9, max_size=9)


@FEW
@given(st.lists(st.tuples(NINE_DIGITS, st.integers(0, 9), st.integers(1, 9)), max_size=40))
def test_modulus_11_valid_numbers_pass_and_one_wrong_digit_fails(
    spark: SparkSession, cases: list[tuple[str, int, int]]
) -> None:
    """Every Modulus-11-valid number is valid unless reserved; any one-digit typo is caught
    (as test range when it starts 999: the reference treats that range as missing)."""
    rows = []
    for nine, position, shift in cases:
        number = with_check_digit(nine)
        if number is None:
            continue
        if len(set(number)) == 1:
            rows.append((number, PLACEHOLDER))
        else:
            rows.append((number, TEST_RANGE if number.startswith("999") else VALID))
        typo = str((int(number[position]) + shift) % 10)
        mistyped = number[:position] + typo + number[position + 1 :]
        rows.append((mistyped, TEST_RANGE if mistyped.startswith("999") else BAD_CHECK))
    df = spark.createDataFrame(rows or [("", MISSING)], "nhs string, status string")
    assert_rules(df, "nhs", status=nhs_number_status)


# --- Dates and date of birth ----------------------------------------------------------------


def test_parse_date_is_strict(spark: SparkSession) -> None:
    rows = [
        ("2024-02-03", dt.date(2024, 2, 3)),
        (" 2024-02-03 ", dt.date(2024, 2, 3)),
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("2023-02-29", None),
        ("2024-02-30", None),
        ("2024-13-01", None),
        ("2024-00-10", None),
        ("2024-2-3", None),
        ("20240203", None),
        ("03/02/2024", None),
        ("2024-02-03T10:00", None),
        ("2024-02-03 x", None),
        ("+2024-02-03", None),
        ("", None),
        (None, None),
    ]
    df = spark.createDataFrame(rows, "text string, parsed date")
    assert_rules(df, "text", parsed=parse_date)


def test_dob_every_status(spark: SparkSession) -> None:
    rows = [
        ("1980-05-17", VALID, dt.date(1980, 5, 17), None),
        (" 1980-05-17\t", VALID, dt.date(1980, 5, 17), None),
        ("1895-01-01", VALID, dt.date(1895, 1, 1), None),
        ("2024-03-31", VALID, dt.date(2024, 3, 31), None),
        (None, MISSING, None, reasons.DOB_MISSING),
        ("", MISSING, None, reasons.DOB_MISSING),
        ("  ", MISSING, None, reasons.DOB_MISSING),
        ("1980-5-17", BAD_DATE, None, reasons.DOB_BAD_DATE),
        ("19800517", BAD_DATE, None, reasons.DOB_BAD_DATE),
        ("1980-02-30", BAD_DATE, None, reasons.DOB_BAD_DATE),
        ("17/05/1980", BAD_DATE, None, reasons.DOB_BAD_DATE),
        ("unknown", BAD_DATE, None, reasons.DOB_BAD_DATE),
        ("1900-01-01", PLACEHOLDER, None, reasons.DOB_PLACEHOLDER),
        ("1800-01-01", PLACEHOLDER, None, reasons.DOB_PLACEHOLDER),
        ("1894-12-31", OUT_OF_RANGE, None, reasons.DOB_OUT_OF_RANGE),
        ("0001-01-01", OUT_OF_RANGE, None, reasons.DOB_OUT_OF_RANGE),
        ("2024-04-01", OUT_OF_RANGE, None, reasons.DOB_OUT_OF_RANGE),
    ]
    df = spark.createDataFrame(rows, "dob string, status string, clean date, reason string")
    assert_rules(
        df,
        "dob",
        status=lambda c: dob_status(c, YEAR_END),
        clean=lambda c: clean_dob(c, YEAR_END),
        reason=lambda c: reasons.reason(dob_status(c, YEAR_END), reasons.DOB_REASONS),
    )


def test_dob_year_end_may_be_a_column(spark: SparkSession) -> None:
    rows = [
        ("2024-06-01", dt.date(2024, 3, 31), OUT_OF_RANGE),
        ("2024-06-01", dt.date(2025, 3, 31), VALID),
        ("2024-06-01", None, VALID),  # no year end: upper bound not checked
        ("1890-06-01", None, OUT_OF_RANGE),
    ]
    df = spark.createDataFrame(rows, "dob string, year_end date, status string")
    status = dob_status(F.col("dob"), F.col("year_end"))
    actual = df.select("dob", "year_end", status.alias("status"))
    assert_df_equality(actual, df, ignore_nullable=True)


# --- Sex ------------------------------------------------------------------------------------


def test_sex_codes(spark: SparkSession) -> None:
    rows = [
        ("1", "1", VALID, None),
        ("2", "2", VALID, None),
        ("9", "9", VALID, None),
        ("0", "0", VALID, None),
        (" 2 ", "2", VALID, None),
        (None, None, MISSING, reasons.SEX_MISSING),
        ("", None, MISSING, reasons.SEX_MISSING),
        ("\t", None, MISSING, reasons.SEX_MISSING),
        ("3", None, BAD_CODE, reasons.SEX_BAD_CODE),
        ("M", None, BAD_CODE, reasons.SEX_BAD_CODE),
        ("f", None, BAD_CODE, reasons.SEX_BAD_CODE),
        ("01", None, BAD_CODE, reasons.SEX_BAD_CODE),
        ("1.0", None, BAD_CODE, reasons.SEX_BAD_CODE),
    ]
    df = spark.createDataFrame(rows, "sex string, code string, status string, reason string")
    assert_rules(
        df,
        "sex",
        code=sex_code,
        status=sex_status,
        reason=lambda c: reasons.reason(sex_status(c), reasons.SEX_REASONS),
    )


# --- Postcode -------------------------------------------------------------------------------


def test_postcodes(spark: SparkSession) -> None:
    address = [  # input, normalised, district: every outward shape
        ("LS1 4AB", "LS1 4AB", "LS1"),
        ("ls14ab", "LS1 4AB", "LS1"),
        ("LS1  4AB", "LS1 4AB", "LS1"),
        (" ls1 4Ab\t", "LS1 4AB", "LS1"),
        ("M1 1AE", "M1 1AE", "M1"),
        ("B338TH", "B33 8TH", "B33"),
        ("CR2 6XH", "CR2 6XH", "CR2"),
        ("DN55 1PT", "DN55 1PT", "DN55"),
        ("w1a 1hq", "W1A 1HQ", "W1A"),
        ("EC1A1BB", "EC1A 1BB", "EC1A"),
        ("GIR 0AA", "GIR 0AA", "GIR"),
    ]
    rows = [
        (raw, norm, VALID, False, norm, district, None)
        for raw, norm, district in address
    ]
    no_address = [None, None]  # linkable, district
    rows += [
        ("ZZ99 3CZ", "ZZ99 3CZ", PSEUDO, True, *no_address, reasons.POSTCODE_PSEUDO),
        ("zz993vz", "ZZ99 3VZ", PSEUDO, True, *no_address, reasons.POSTCODE_PSEUDO),
        ("ZZ99 3WZ", "ZZ99 3WZ", PSEUDO, True, *no_address, reasons.POSTCODE_PSEUDO),
        (None, None, MISSING, None, *no_address, reasons.POSTCODE_MISSING),
        ("", None, MISSING, False, *no_address, reasons.POSTCODE_MISSING),
        ("   ", None, MISSING, False, *no_address, reasons.POSTCODE_MISSING),
        ("LS1", None, BAD_FORMAT, False, *no_address, reasons.POSTCODE_BAD_FORMAT),
        ("LS1 4A", None, BAD_FORMAT, False, *no_address, reasons.POSTCODE_BAD_FORMAT),
        ("1LS 4AB", None, BAD_FORMAT, False, *no_address, reasons.POSTCODE_BAD_FORMAT),
        ("LS1 4AB X", None, BAD_FORMAT, False, *no_address, reasons.POSTCODE_BAD_FORMAT),
        ("LS1-4AB", None, BAD_FORMAT, False, *no_address, reasons.POSTCODE_BAD_FORMAT),
        ("ZZ99", None, BAD_FORMAT, True, *no_address, reasons.POSTCODE_BAD_FORMAT),
    ]
    df = spark.createDataFrame(
        rows,
        "postcode string, normalised string, status string, pseudo boolean, linkable string,"
        " district string, reason string",
    )
    assert_rules(
        df,
        "postcode",
        normalised=normalise_postcode,
        status=postcode_status,
        pseudo=is_pseudo_postcode,
        linkable=linkable_postcode,
        district=postcode_district,
        reason=lambda c: reasons.reason(postcode_status(c), reasons.POSTCODE_REASONS),
    )


@st.composite
def postcode_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """(canonical 'LS1 4AB' form, the same postcode in random case and spacing)."""
    compact = draw(st.from_regex(r"[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}", fullmatch=True))
    chars = [c.lower() if draw(st.booleans()) else c for c in compact]
    spelled = "".join(c + " " * draw(st.integers(0, 2)) for c in chars)
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return f"{compact[:-3]} {compact[-3:]}", pad + spelled + pad


@FEW
@given(st.lists(postcode_spellings(), min_size=1, max_size=30))
def test_postcode_normalisation_ignores_case_and_spacing(
    spark: SparkSession, spellings: list[tuple[str, str]]
) -> None:
    df = spark.createDataFrame([(s, c) for c, s in spellings], "postcode string, normalised string")
    assert_rules(df, "postcode", normalised=normalise_postcode)


@FEW
@given(st.lists(st.one_of(ANY_TEXT, postcode_spellings().map(lambda p: p[1])), max_size=30))
def test_rules_never_fail_and_normalising_is_idempotent(
    spark: SparkSession, texts: list[str]
) -> None:
    """Arbitrary text through every identifier rule under ANSI mode: no error, and a
    normalised postcode normalises to itself."""
    once = normalise_postcode(F.col("text"))
    df = spark.createDataFrame([(t,) for t in texts], "text string").select(
        once.alias("once"),
        normalise_postcode(once).alias("twice"),
        nhs_number_status(F.col("text")).alias("nhs"),
        clean_nhs_number(F.col("text")).alias("clean_nhs"),
        dob_status(F.col("text"), YEAR_END).alias("dob"),
        clean_dob(F.col("text"), YEAR_END).alias("clean_dob"),
        sex_status(F.col("text")).alias("sex"),
        postcode_status(F.col("text")).alias("postcode"),
    )
    assert_column_equality(df, "once", "twice")


# --- Reason vocabulary ----------------------------------------------------------------------


def test_every_field_reason_has_a_meaning() -> None:
    field_reasons = [
        reasons.NHS_NUMBER_REASONS,
        reasons.DOB_REASONS,
        reasons.SEX_REASONS,
        reasons.POSTCODE_REASONS,
        reasons.SNOMED_REASONS,
    ]
    codes = [code for mapping in field_reasons for code in mapping.values()]
    assert set(codes) <= set(reasons.MEANINGS)
    assert len(codes) == len(set(codes))  # no two statuses share a code
    assert all(VALID not in mapping and MISSING in mapping for mapping in field_reasons)
