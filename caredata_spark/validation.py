"""Row validation of a parsed submission: what is kept, repaired or quarantined, and why.

A row that cannot be used (unparseable, a required field missing, an unusable key date or
code) gets quarantine reasons. A row with a repairable problem is kept with the bad field
set to missing and a data-quality flag naming the field. Field-specific codes read
`REASON:COLUMN` (e.g. `DATE_BAD:DISDATE`) so the summary says where the problem was.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from caredata_spark import reasons
from caredata_spark.clinical_codes import clean_icd10, clean_opcs4, clean_snomed_id, snomed_id_status
from caredata_spark.contract import Dataset
from caredata_spark.identifiers import (
    clean_dob,
    clean_nhs_number,
    dob_status,
    is_pseudo_postcode,
    nhs_digits,
    nhs_number_status,
    normalise_postcode,
    parse_date,
    postcode_status,
    sex_code,
    sex_status,
)

# A plain decimal number: sign, digits, fraction, exponent. At most 20 integer digits and a
# two-digit exponent keep it finite as a double (under 1e120).
NUMBER_PATTERN = r"^[+-]?(?:[0-9]{1,20}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?$"

PARSED_KEY = "parsed_key"  # a malformed line's key, for the type 1 drop only (`keys`)

# (earlier, later) pairs whose order is checked; the later date is dropped when out of order
DATE_ORDER = {
    "hes_apc": (("ADMIDATE", "DISDATE"), ("EPISTART", "EPIEND"), ("ADMIDATE", "EPISTART")),
    "gp_patients": (("REG_DATE", "DEREG_DATE"),),
}


def _value(col: Column) -> Column:
    """The field without surrounding whitespace; null when blank (blank means missing)."""
    return F.nullif(reasons.stripped(col), F.lit(""))


def parse_number(col: Column) -> Column:
    """The value as a double when it is a plain decimal number, else null.

    A bare double cast also reads NaN, Infinity, Java suffixes (`1d`), hexadecimal
    (`0x1p3`) and overflows (`1e400` as infinity): none is a measurement. As in
    `parse_date`, regexp_extract yields '' for anything else and try_cast makes it null.
    """
    return F.regexp_extract(reasons.stripped(col), NUMBER_PATTERN, 0).try_cast("double")


def _tagged(code: str, column: str) -> Column:
    return F.lit(f"{code}:{column}")


def _codes(*candidates: Column) -> Column:
    """The non-null codes among `candidates`, as an array (empty when all are null)."""
    return F.filter(F.array(*candidates), lambda c: c.isNotNull())


def organisation_code(col: Column) -> Column:
    """A practice or provider code, upper case: ODS codes are case-blind, and a code sent as
    `a81001` must key the same record as `A81001` (a type 1 dissent keyed apart from its
    registration would not drop it)."""
    return F.upper(_value(col))


def today_in_england() -> Column:
    """Today's date in England, where the data is recorded. The session clock is UTC, and
    an event recorded just after midnight in summer (BST) would look a day ahead of it.
    A constant: Spark fixes the current time once per query."""
    return F.convert_timezone(None, F.lit("Europe/London"), F.localtimestamp()).cast("date")


def record_key(dataset: Dataset) -> Column:
    """The contract's record key as the line's fields give it."""
    parts = [organisation_code(F.col(c)) if c == dataset.provider else _value(F.col(c)) for c in dataset.key]
    return parts[0] if len(parts) == 1 else F.concat_ws("/", *parts)


def keys(dataset: Dataset) -> list[Column]:
    """`record_key`, null for a line with a parse problem, and `parsed_key`, that line's key.

    Such a line's fields may be shifted (a GP line missing PATIENT_ID would key as
    `A81001/<NHS number>`), and quarantine stores keys in clear (the raw line is kept there,
    encrypted). Its key as parsed is still the best guess of whose line it is, so ingest
    matches it against type 1 objectors, then drops it: `PARSED_KEY` is never written.
    """
    key, trusted = record_key(dataset), F.col("parse_problem").isNull()
    return [F.when(trusted, key).alias("record_key"), F.when(~trusted, key).alias(PARSED_KEY)]


def _code_cleaners(dataset: Dataset) -> dict[str, tuple[Callable[[Column], Column], str]]:
    return {
        **{c: (clean_icd10, reasons.ICD10_BAD_FORMAT) for c in dataset.diagnoses},
        **{c: (clean_opcs4, reasons.OPCS4_BAD_FORMAT) for c in dataset.operations},
    }


def _typed(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """First pass: every field trimmed, parsed and cleaned once, with its status.

    Raw values stay under `raw_<COLUMN>` so the second pass can tell "missing" from
    "present but invalid" without re-parsing; each expression is written once in the plan.
    """

    def transform(parsed: DataFrame) -> DataFrame:
        activity = parse_date(F.col(dataset.activity_date))
        # a birth is after neither the activity nor today (least skips a null activity)
        upper_bound = F.least(activity, today_in_england())
        nhs, dob, sex, postcode = (F.col(c) for c in dataset.identifiers)
        cleaned = {
            **{c: parse_date(F.col(c)) for c in dataset.dates},
            **{c: clean(F.col(c)) for c, (clean, _) in _code_cleaners(dataset).items()},
            **{c: parse_number(F.col(c)) for c in dataset.numeric},
        }
        snomed = (
            {"SNOMED_CODE": clean_snomed_id(F.col("SNOMED_CODE")),
             "snomed_reason": reasons.reason(snomed_id_status(F.col("SNOMED_CODE")), reasons.SNOMED_REASONS)}
            if "SNOMED_CODE" in dataset.columns
            else {}
        )
        handled = {*cleaned, *snomed, *dataset.identifiers, *dataset.key, dataset.provider}
        return parsed.select(
            "submission_id",
            "line_number",
            "line",
            "parse_problem",
            *keys(dataset),
            organisation_code(F.col(dataset.provider)).alias("provider"),
            *[_value(F.col(c)).alias(f"raw_{c}") for c in dict.fromkeys([*cleaned, *dataset.required])],
            *[v.alias(c) for c, v in cleaned.items()],
            *[v.alias(c) for c, v in snomed.items()],
            *[_value(F.col(c)).alias(c) for c in dataset.columns if c not in handled],
            clean_nhs_number(nhs).alias("nhs_number"),
            nhs_digits(nhs).alias("raw_nhs_digits"),
            clean_dob(dob, upper_bound).alias("dob"),
            sex_code(sex).alias("sex"),
            normalise_postcode(postcode).alias("postcode"),
            reasons.reason(nhs_number_status(nhs), reasons.NHS_NUMBER_REASONS).alias("nhs_reason"),
            reasons.reason(dob_status(dob, upper_bound), reasons.DOB_REASONS).alias("dob_reason"),
            reasons.reason(sex_status(sex), reasons.SEX_REASONS).alias("sex_reason"),
            reasons.reason(postcode_status(postcode), reasons.POSTCODE_REASONS).alias("postcode_reason"),
        )

    return transform


def _judged(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """Second pass: quarantine reasons and repair flags from the first pass's columns."""

    def transform(typed: DataFrame) -> DataFrame:
        def invalid(column: str) -> Column:
            return F.col(f"raw_{column}").isNotNull() & F.col(column).isNull()

        required_missing = [
            F.when(F.col(f"raw_{c}").isNull(), _tagged(reasons.REQUIRED_MISSING, c)) for c in dataset.required
        ]
        activity_bad = F.when(invalid(dataset.activity_date), _tagged(reasons.DATE_BAD, dataset.activity_date))
        activity_future = F.when(
            F.col(dataset.activity_date) > today_in_england(), _tagged(reasons.DATE_FUTURE, dataset.activity_date)
        )
        snomed = [F.col("snomed_reason")] if "SNOMED_CODE" in dataset.columns else []
        quarantine = _codes(F.col("parse_problem"), *required_missing, activity_bad, activity_future, *snomed)

        # false, not null, when either date is missing or invalid: only two real dates are
        # out of order, and `~null` would drop a valid later date too
        out_of_order = {
            later: F.coalesce(F.col(earlier) > F.col(later), F.lit(False))
            for earlier, later in DATE_ORDER.get(dataset.name, ())
        }
        flags = _codes(
            *[F.col(f"{field}_reason") for field in ("nhs", "dob", "sex", "postcode")],
            *[F.when(invalid(c), _tagged(reasons.DATE_BAD, c)) for c in dataset.dates if c != dataset.activity_date],
            *[F.when(bad, _tagged(reasons.DATES_OUT_OF_ORDER, later)) for later, bad in out_of_order.items()],
            *[F.when(invalid(c), _tagged(code, c)) for c, (_, code) in _code_cleaners(dataset).items()],
            *[F.when(invalid(c), _tagged(reasons.VALUE_NOT_NUMERIC, c)) for c in dataset.numeric],
        )
        repaired_dates = {later: F.when(~bad, F.col(later)) for later, bad in out_of_order.items()}
        # a mistyped digit always fails Modulus 11: keep such numbers for typo-tolerant hashes
        typo_candidate = F.col("nhs_reason").isNull() | (F.col("nhs_reason") == reasons.NHS_BAD_CHECK)
        dropped = {c for c in typed.columns if c.startswith("raw_") or c.endswith("_reason")} | {"parse_problem"}
        kept = [repaired_dates[c].alias(c) if c in repaired_dates else F.col(c) for c in typed.columns if c not in dropped]
        return typed.select(
            *kept,
            F.when(typo_candidate, F.col("raw_nhs_digits")).alias("nhs_digits"),
            is_pseudo_postcode(F.col("postcode")).alias("pseudo_postcode"),
            quarantine.alias("quarantine_reasons"),
            flags.alias("dq_flags"),
        )

    return transform


def validate(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """Typed, cleaned columns plus `quarantine_reasons` and `dq_flags` (arrays of codes).

    Input: the output of `parsing.parse_lines` (string columns). Output keeps
    submission_id, line_number and line, and adds record_key, typed dates, normalised
    identifiers (clean NHS number, DOB, sex code, postcode) and cleaned clinical codes.
    """
    return lambda parsed: parsed.transform(_typed(dataset)).transform(_judged(dataset))


def quarantined_if(condition: Column, code: str) -> Column:
    """`quarantine_reasons` with `code` added where `condition` holds."""
    reasons_now = F.col("quarantine_reasons")
    return F.when(condition, F.array_append(reasons_now, F.lit(code))).otherwise(reasons_now)


def flag_duplicate_keys(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """Quarantine repeats of a record key within one submission (the first line is kept).

    GP events share their patient's key by design, so only datasets with one row per key
    are checked. The window partitions by (submission, key): a shuffle on the key, which
    scales with the data and never gathers it in one partition.
    """
    if not dataset.unique_key:
        return lambda df: df
    order = Window.partitionBy("submission_id", "record_key").orderBy("line_number")

    def transform(df: DataFrame) -> DataFrame:
        repeat = F.col("record_key").isNotNull() & (F.row_number().over(order) > 1)
        return df.withColumn("quarantine_reasons", quarantined_if(repeat, reasons.DUPLICATE_KEY))

    return transform


def provider_of_submitter(provider: Column, submitter: Column, source: str) -> Column:
    """Whether a row's practice or provider code is its file's submitter: the same code, or
    in HES a five-character site code of the submitting trust (RTH01 of RTH). `provider` is
    upper case already (`organisation_code`); the submitter is a folder name, in any case."""
    submitter = F.upper(submitter)
    same = provider == submitter
    if source == "gp":
        return same
    site = (F.length(provider) == 5) & (F.length(submitter) == 3) & provider.startswith(submitter)
    return same | site


def flag_foreign_provider(dataset: Dataset, files: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Quarantine a row whose practice or provider code is present but not its file's submitter.

    A GP record key starts with the practice code, so a row another practice's file carries
    would write into that practice's keys, and a type 1 objection in it would erase that
    practice's patient. `files` (submission_id, submitter) has one row per file: broadcast.
    """

    def transform(rows: DataFrame) -> DataFrame:
        submitters = F.broadcast(files.select("submission_id", F.col("submitter").alias("_submitter")))
        provider = F.col("provider")
        foreign = provider.isNotNull() & ~provider_of_submitter(provider, F.col("_submitter"), dataset.source)
        code = f"{reasons.PROVIDER_NOT_SUBMITTER}:{dataset.provider}"
        return (
            rows.join(submitters, on="submission_id", how="left")
            .withColumn("quarantine_reasons", quarantined_if(F.coalesce(foreign, F.lit(False)), code))
            .select(*rows.columns)
        )

    return transform
