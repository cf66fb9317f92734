"""Row validation (`caredata_spark.validation`) on tiny hand-written parsed submissions."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons
from caredata_spark.contract import DATASETS, Dataset
from caredata_spark.validation import flag_foreign_provider, validate

GP_PATIENTS, GP_EVENTS, HES_APC, HES_OP = (DATASETS[d] for d in ("gp_patients", "gp_events", "hes_apc", "hes_op"))


def parsed(spark: SparkSession, nhs_numbers: list[str | None]) -> DataFrame:
    """gp_patients rows as `parsing.parse_lines` gives them, one per NHS number, else alike."""
    fields = {"PRACTICE_CODE": "A81001", "DOB": "1980-05-06", "SEX": "1", "POSTCODE": "LS1 4AB",
              "REG_DATE": "2020-01-01", "DEREG_DATE": None}
    rows = [
        ("s1", line, b"raw", *[str(line) if c == "PATIENT_ID" else nhs if c == "NHS_NUMBER" else fields[c]
                              for c in GP_PATIENTS.columns], None)
        for line, nhs in enumerate(nhs_numbers, start=2)
    ]
    schema = ", ".join(
        ["submission_id string", "line_number long", "line binary",
         *[f"{c} string" for c in GP_PATIENTS.columns], "parse_problem string"]
    )
    return spark.createDataFrame(rows, schema)


def parsed_rows(spark: SparkSession, dataset: Dataset, *records: dict[str, str | None]) -> DataFrame:
    """Rows of `dataset` as `parsing.parse_lines` gives them, one per record from line 2;
    absent fields are null, and a record may set its `parse_problem`."""
    rows = [
        ("s1", line, b"raw", *[record.get(c) for c in dataset.columns], record.get("parse_problem"))
        for line, record in enumerate(records, start=2)
    ]
    schema = ", ".join(
        ["submission_id string", "line_number long", "line binary",
         *[f"{c} string" for c in dataset.columns], "parse_problem string"]
    )
    return spark.createDataFrame(rows, schema)


def test_a_line_that_did_not_parse_has_no_record_key(spark: SparkSession) -> None:
    """A GP line missing PATIENT_ID has its NHS number where the patient id should be: its
    key would be `A81001/<NHS number>`, and quarantine stores keys in clear."""
    good = {"PRACTICE_CODE": "A81001", "PATIENT_ID": "P1", "NHS_NUMBER": "9434765919", "DOB": "1980-05-05",
            "SEX": "1", "POSTCODE": "LS1 4AB", "EVENT_DATE": "2024-03-01", "SNOMED_CODE": "22298006"}
    shifted = {"PRACTICE_CODE": "A81001", "PATIENT_ID": "9434765919", "NHS_NUMBER": "1980-05-05", "DOB": "1",
               "SEX": "LS1 4AB", "POSTCODE": "2024-03-01", "EVENT_DATE": "22298006",
               "parse_problem": reasons.MALFORMED_ROW}
    out = parsed_rows(spark, GP_EVENTS, good, shifted).transform(validate(GP_EVENTS))
    assert [(r["line_number"], r["record_key"]) for r in out.orderBy("line_number").collect()] == [
        (2, "A81001/P1"), (3, None)
    ]


def test_nhs_digits_strip_the_same_whitespace_as_the_rules(spark: SparkSession) -> None:
    """A valid number separated by no-break spaces (spreadsheet exports) is valid and its
    typo-tolerant digits are its 10 digits, not 12 characters that no deletion hash can match."""
    nbsp = "\u00a0"
    numbers = ["943 476 5919", f"943{nbsp}476{nbsp}5919", "4012345680", "9434765918", "943476591", "9990000019"]
    out = parsed(spark, numbers).transform(validate(GP_PATIENTS)).select("record_key", "nhs_number", "nhs_digits")
    expected = spark.createDataFrame(
        [
            ("A81001/2", "9434765919", "9434765919"),
            ("A81001/3", "9434765919", "9434765919"),
            ("A81001/4", "4012345680", "4012345680"),  # check digit 0 (sum mod 11 = 0)
            ("A81001/5", None, "9434765918"),  # fails only the check digit: kept for typo hashes
            ("A81001/6", None, None),  # 9 digits: no usable digits at all
            ("A81001/7", None, None),  # 999 test range, never issued: missing, even failing the check
        ],
        "record_key string, nhs_number string, nhs_digits string",
    )
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True)
    assert out.filter(F.length("nhs_digits") != 10).count() == 0


def test_a_row_of_another_practice_or_provider_is_quarantined(spark: SparkSession) -> None:
    """A practice's file may hold only its own rows; a trust's, its own or its sites' (RTH01).
    Rows' codes arrive upper case from validation; the submitter folder may be in any case."""
    files = spark.createDataFrame(
        [("gp1", "gp_events", "A81001", "p"), ("gp2", "gp_events", "a81001", "p"), ("apc1", "hes_apc", "RTH", "p")],
        "submission_id string, dataset string, submitter string, path string",
    )
    schema = "submission_id string, line_number long, provider string, quarantine_reasons array<string>"
    gp = spark.createDataFrame(
        [("gp1", 2, "A81001", []), ("gp1", 3, "B82002", []), ("gp2", 4, "A81001", []),
         ("gp1", 5, None, ["REQUIRED_MISSING:PRACTICE_CODE"]), ("gp1", 6, "A81001X", [])],
        schema,
    )
    hes = spark.createDataFrame(
        [("apc1", 2, "RTH", []), ("apc1", 3, "RTH01", []), ("apc1", 4, "RXX", []), ("apc1", 5, "RTH0", []),
         ("apc1", 6, "RXX01", ["DATE_BAD:ADMIDATE"])],
        schema,
    )
    foreign_gp, foreign_apc = "PROVIDER_NOT_SUBMITTER:PRACTICE_CODE", "PROVIDER_NOT_SUBMITTER:PROCODE"
    assert_df_equality(
        gp.transform(flag_foreign_provider(DATASETS["gp_events"], files)),
        spark.createDataFrame(
            [("gp1", 2, "A81001", []), ("gp1", 3, "B82002", [foreign_gp]), ("gp2", 4, "A81001", []),
             ("gp1", 5, None, ["REQUIRED_MISSING:PRACTICE_CODE"]), ("gp1", 6, "A81001X", [foreign_gp])],
            schema,
        ),
        ignore_row_order=True,
    )
    assert_df_equality(
        hes.transform(flag_foreign_provider(DATASETS["hes_apc"], files)),
        spark.createDataFrame(
            [("apc1", 2, "RTH", []), ("apc1", 3, "RTH01", []), ("apc1", 4, "RXX", [foreign_apc]),
             ("apc1", 5, "RTH0", [foreign_apc]), ("apc1", 6, "RXX01", ["DATE_BAD:ADMIDATE", foreign_apc])],
            schema,
        ),
        ignore_row_order=True,
    )


def test_a_later_date_is_kept_when_the_earlier_one_is_blank_or_invalid(spark: SparkSession) -> None:
    """Order is only judged between two real dates: a blank or impossible EPISTART says
    nothing against EPIEND. Out of order, the later date is dropped and flagged."""
    base = {"EPIKEY": "E1", "PROCODE": "RTH", "ADMIDATE": "2024-03-01", "EPISTART": "2024-03-01",
            "EPIEND": "2024-03-05", "DISDATE": "2024-03-05"}
    episodes = [base, {**base, "EPIKEY": "E2", "EPISTART": ""}, {**base, "EPIKEY": "E3", "EPISTART": "2024-02-30"},
                {**base, "EPIKEY": "E4", "EPISTART": "2024-03-06"}]
    out = parsed_rows(spark, HES_APC, *episodes).transform(validate(HES_APC))
    flags = F.filter("dq_flags", lambda f: f.startswith("DATE"))
    actual = out.select("record_key", F.col("EPIEND").cast("string").alias("EPIEND"), flags.alias("flags"))
    expected = spark.createDataFrame(
        [("E1", "2024-03-05", []), ("E2", "2024-03-05", []), ("E3", "2024-03-05", ["DATE_BAD:EPISTART"]),
         ("E4", None, ["DATES_OUT_OF_ORDER:EPIEND"])],
        "record_key string, EPIEND string, flags array<string>",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_a_future_activity_is_quarantined_and_a_birth_is_never_after_today(spark: SparkSession) -> None:
    """An appointment in 2099 has not happened: quarantined (DATE_FUTURE), and it no longer
    lifts the date of birth's upper bound past today. Today itself is not the future."""
    today = dt.datetime.now(ZoneInfo("Europe/London")).date().isoformat()  # Spark's is no earlier
    base = {"ATTENDKEY": "K1", "PROCODE": "RTH", "DOB": "1980-05-05", "APPTDATE": "2024-03-01"}
    appointments = [
        base,
        {**base, "ATTENDKEY": "K2", "DOB": "2098-05-05", "APPTDATE": "2099-01-01"},
        {**base, "ATTENDKEY": "K3", "DOB": "2098-05-05", "APPTDATE": "2024-02-30"},
        {**base, "ATTENDKEY": "K4", "DOB": "2024-03-02"},
        {**base, "ATTENDKEY": "K5", "APPTDATE": today},
    ]
    out = parsed_rows(spark, HES_OP, *appointments).transform(validate(HES_OP))
    actual = out.select(
        "record_key", F.col("dob").cast("string").alias("dob"), "quarantine_reasons",
        F.filter("dq_flags", lambda f: f.startswith("DOB")).alias("dob_flags"),
    )
    expected = spark.createDataFrame(
        [("K1", "1980-05-05", [], []), ("K2", None, ["DATE_FUTURE:APPTDATE"], ["DOB_OUT_OF_RANGE"]),
         ("K3", None, ["DATE_BAD:APPTDATE"], ["DOB_OUT_OF_RANGE"]), ("K4", None, [], ["DOB_OUT_OF_RANGE"]),
         ("K5", "1980-05-05", [], [])],
        "record_key string, dob string, quarantine_reasons array<string>, dob_flags array<string>",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_value_is_a_plain_decimal_number(spark: SparkSession) -> None:
    """VALUE takes sign, digits, a fraction and a short exponent; what a double cast also
    reads (NaN, Infinity, Java's 1d and hex 0x1p3, 1e400 as infinity) is not numeric."""
    numbers = {"5.1": 5.1, " 7 ": 7.0, "-3": -3.0, "+2.5": 2.5, ".5": 0.5, "5.": 5.0, "1e3": 1000.0,
               "1.5E-2": 0.015, "1e99": 1e99, "": None, None: None}
    not_numbers = ["NaN", "-Infinity", "Infinity", "1d", "2f", "0x1p3", "1e400", "1" + "0" * 21, "1,5",
                   "12..3", "e5", ".", "-", "1e", "1 000"]
    records = [{"PRACTICE_CODE": "A81001", "PATIENT_ID": "P1", "EVENT_DATE": "2024-03-01",
                "SNOMED_CODE": "22298006", "VALUE": v} for v in [*numbers, *not_numbers]]
    out = parsed_rows(spark, GP_EVENTS, *records).transform(validate(GP_EVENTS))
    flagged = F.array_contains("dq_flags", "VALUE_NOT_NUMERIC:VALUE")
    rows = out.select("line_number", "VALUE", flagged.alias("flagged")).collect()
    actual = {r["line_number"]: (r["VALUE"], r["flagged"]) for r in rows}
    expected = [(v, False) for v in numbers.values()] + [(None, True)] * len(not_numbers)
    assert [actual[line] for line in range(2, 2 + len(records))] == expected
