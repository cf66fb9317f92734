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
    nhs_number_status,
    normalise_postcode,
    parse_date,
    postcode_status,
    sex_code,
    sex_status,
)

DUPLICATE_KEY = "DUPLICATE_KEY"
# (earlier, later) pairs whose order is checked; the later date is dropped when out of order
DATE_ORDER = {
    "hes_apc": (("ADMIDATE", "DISDATE"), ("EPISTART", "EPIEND"), ("ADMIDATE", "EPISTART")),
    "gp_patients": (("REG_DATE", "DEREG_DATE"),),
}


def _value(col: Column) -> Column:
    """The field without surrounding whitespace; null when blank (blank means missing)."""
    return F.nullif(reasons.stripped(col), F.lit(""))


def _tagged(code: str, column: str) -> Column:
    return F.lit(f"{code}:{column}")


def _codes(*candidates: Column) -> Column:
    """The non-null codes among `candidates`, as an array (empty when all are null)."""
    return F.filter(F.array(*candidates), lambda c: c.isNotNull())


def record_key(dataset: Dataset) -> Column:
    parts = [_value(F.col(c)) for c in dataset.key]
    return parts[0] if len(parts) == 1 else F.concat_ws("/", *parts)


def validate(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """Typed, cleaned columns plus `quarantine_reasons` and `dq_flags` (arrays of codes).

    Input: the output of `parsing.parse_lines` (string columns). Output keeps
    submission_id, line_number and line, and adds record_key, typed dates, normalised
    identifiers (clean NHS number, DOB, sex code, postcode) and cleaned clinical codes.
    """

    def transform(parsed: DataFrame) -> DataFrame:
        activity = parse_date(F.col(dataset.activity_date))
        dates = {c: parse_date(F.col(c)) for c in dataset.dates}
        required_missing = [
            F.when(_value(F.col(c)).isNull(), _tagged(reasons.REQUIRED_MISSING, c))
            for c in dataset.required
        ]
        activity_bad = F.when(
            _value(F.col(dataset.activity_date)).isNotNull() & activity.isNull(),
            _tagged(reasons.DATE_BAD, dataset.activity_date),
        )
        snomed_reason = (
            [reasons.reason(snomed_id_status(F.col("SNOMED_CODE")), reasons.SNOMED_REASONS)]
            if "SNOMED_CODE" in dataset.columns
            else []
        )
        quarantine = _codes(F.col("parse_problem"), *required_missing, activity_bad, *snomed_reason)

        nhs = F.col(dataset.nhs)
        dob = F.col(dataset.dob)
        postcode = F.col(dataset.postcode)
        upper_bound = F.coalesce(activity, F.current_date())
        identifier_flags = [
            reasons.reason(nhs_number_status(nhs), reasons.NHS_NUMBER_REASONS),
            reasons.reason(dob_status(dob, upper_bound), reasons.DOB_REASONS),
            reasons.reason(sex_status(F.col(dataset.sex)), reasons.SEX_REASONS),
            reasons.reason(postcode_status(postcode), reasons.POSTCODE_REASONS),
        ]
        date_flags = [
            F.when(_value(F.col(c)).isNotNull() & dates[c].isNull(), _tagged(reasons.DATE_BAD, c))
            for c in dataset.dates
            if c != dataset.activity_date
        ]
        out_of_order = {
            later: dates[earlier] > dates[later] for earlier, later in DATE_ORDER.get(dataset.name, ())
        }
        order_flags = [
            F.when(bad, _tagged(reasons.DATES_OUT_OF_ORDER, later)) for later, bad in out_of_order.items()
        ]
        code_columns = {
            **{c: (clean_icd10, reasons.ICD10_BAD_FORMAT) for c in dataset.diagnoses},
            **{c: (clean_opcs4, reasons.OPCS4_BAD_FORMAT) for c in dataset.operations},
        }
        code_flags = [
            F.when(_value(F.col(c)).isNotNull() & clean(F.col(c)).isNull(), _tagged(code, c))
            for c, (clean, code) in code_columns.items()
        ]
        numeric = {c: F.col(c).try_cast("double") for c in dataset.numeric}
        value_flags = [
            F.when(_value(F.col(c)).isNotNull() & value.isNull(), _tagged(reasons.VALUE_NOT_NUMERIC, c))
            for c, value in numeric.items()
        ]
        flags = _codes(*identifier_flags, *date_flags, *order_flags, *code_flags, *value_flags)

        typed_dates = {
            c: F.when(~out_of_order[c], dates[c]) if c in out_of_order else dates[c]
            for c in dataset.dates
        }
        clinical = {
            **{c: clean(F.col(c)) for c, (clean, _) in code_columns.items()},
            **numeric,
            **({"SNOMED_CODE": clean_snomed_id(F.col("SNOMED_CODE"))} if snomed_reason else {}),
        }
        handled = {*dataset.dates, *clinical, *dataset.identifiers, *dataset.key, dataset.provider}
        others = [_value(F.col(c)).alias(c) for c in dataset.columns if c not in handled]
        sex = F.col(dataset.sex)
        return parsed.select(
            "submission_id",
            "line_number",
            "line",
            record_key(dataset).alias("record_key"),
            _value(F.col(dataset.provider)).alias("provider"),
            *[v.alias(c) for c, v in typed_dates.items()],
            *[v.alias(c) for c, v in clinical.items()],
            *others,
            clean_nhs_number(nhs).alias("nhs_number"),
            clean_dob(dob, upper_bound).alias("dob"),
            F.when(sex_status(sex) == reasons.VALID, sex_code(sex)).alias("sex"),
            normalise_postcode(postcode).alias("postcode"),
            is_pseudo_postcode(normalise_postcode(postcode)).alias("pseudo_postcode"),
            quarantine.alias("quarantine_reasons"),
            flags.alias("dq_flags"),
        )

    return transform


def flag_duplicate_keys(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """Quarantine repeats of a record key within one submission (the first line is kept).

    GP events share their patient's key by design, so only datasets with one row per key
    are checked. The window partitions by (submission, key): a shuffle on the key, which
    scales with the data and never gathers it in one partition.
    """
    if dataset.name == "gp_events":
        return lambda df: df
    order = Window.partitionBy("submission_id", "record_key").orderBy("line_number")

    def transform(df: DataFrame) -> DataFrame:
        repeat = F.col("record_key").isNotNull() & (F.row_number().over(order) > 1)
        return df.withColumn(
            "quarantine_reasons",
            F.when(repeat, F.array_append("quarantine_reasons", F.lit(DUPLICATE_KEY))).otherwise(
                F.col("quarantine_reasons")
            ),
        )

    return transform
