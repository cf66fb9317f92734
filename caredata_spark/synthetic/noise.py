"""What goes wrong on the way into a file: identifier noise and dirty rows.

Noise keeps a record usable but makes linkage harder (a mistyped NHS number digit, a
stale postcode); dirt breaks a field or the row (a bad date, text in a numeric field,
an extra field). Each record gets at most one noise kind per identifier and at most one
dirt kind, each drawn from its own stream, and the kinds applied go to the ground truth.
A kind that cannot apply to a record (a day/month swap of 25 March) leaves it clean and
unflagged, so the truth says exactly what was done.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.synthetic.geography import PSEUDO_POSTCODES
from caredata_spark.synthetic.sampling import Draws, constant_at
from caredata_spark.synthetic.settings import DirtyRates, NoiseRates

NHS_PLACEHOLDERS = ("0000000000", "1111111111", "9999999999", "9990000000")
DOB_PLACEHOLDER = dt.date(1900, 1, 1)
NOISE_INPUTS = ("nhs_number", "dob", "sex", "true_postcode", "stale_postcode")


def _kind(u: Column, rates: Mapping[str, float]) -> Column:
    """The kind whose slice of [0, 1) holds u, slices laid end to end; null past them all."""
    cases = [(kind, rate) for kind, rate in rates.items() if rate > 0]
    if not cases:
        return F.lit(None).cast("string")
    threshold = cases[0][1]
    result = F.when(u < threshold, F.lit(cases[0][0]))
    for kind, rate in cases[1:]:
        threshold += rate
        result = result.when(u < threshold, F.lit(kind))
    return result


def _replace_digit(digits: Column, draws: Draws, stream: str, keys: Sequence[Column]) -> Column:
    """One digit of a digit string replaced by a different digit."""
    position = (draws.below(f"{stream}/position", *keys, n=F.length(digits)) + 1).cast("int")
    old = F.substr(digits, position, F.lit(1)).cast("int")
    new = (old + 1 + draws.below(f"{stream}/digit", *keys, n=9)) % 10
    return F.overlay(digits, new.cast("string"), position, F.lit(1))


def _one_of(values: Sequence[str], draws: Draws, stream: str, keys: Sequence[Column]) -> Column:
    index = draws.below(stream, *keys, n=len(values)) + 1
    return constant_at(values, index.cast("int"))


def with_identifier_noise(rates: NoiseRates, draws: Draws, stream: str, keys: Sequence[str], end: dt.date):
    """Add `<identifier>_written` (as the file will carry them) and `noise` (kinds applied).

    Reads the true values in NOISE_INPUTS; `stale_postcode` is the previous address where
    one is known (null otherwise). Dates and codes come out as text.
    """

    def transform(df: DataFrame) -> DataFrame:
        key = [F.col(k) for k in keys]

        def u(name: str) -> Column:
            return draws.uniform(f"{stream}/{name}", *key)

        nhs_kind = _kind(u("nhs"), rates.kinds("nhs"))
        dob_kind = _kind(u("dob"), rates.kinds("dob"))
        sex_kind = _kind(u("sex"), rates.kinds("sex"))
        postcode_kind = _kind(u("postcode"), rates.kinds("postcode"))
        dob = F.col("dob")
        day, month, year = F.dayofmonth(dob), F.month(dob), F.year(dob)
        swappable = (day <= 12) & (day != month)
        new_year = year - year % 10 + (year % 10 + 1 + draws.below(f"{stream}/dob/year", *key, n=9)) % 10
        year_ok = (new_year <= end.year) & ~((month == 2) & (day == 29))
        other_day = F.when(day < 10, day + 10).when(day == 10, 20).otherwise(day - 10)
        stale = F.col("stale_postcode")
        has_stale = stale.isNotNull() & (stale != F.col("true_postcode"))
        return (
            df.withColumn("_nhs_kind", F.when(F.col("nhs_number").isNotNull(), nhs_kind))
            .withColumn(
                "_dob_kind",
                F.when((dob_kind == "dob_swap") & ~swappable, None).otherwise(dob_kind),
            )
            .withColumn("_sex_kind", sex_kind)
            .withColumn(
                "_postcode_kind",
                F.when((postcode_kind == "postcode_stale") & ~has_stale, None).otherwise(postcode_kind),
            )
            .withColumn(
                "nhs_written",
                F.when(F.col("_nhs_kind") == "nhs_missing", None)
                .when(F.col("_nhs_kind") == "nhs_typo", _replace_digit(F.col("nhs_number"), draws, f"{stream}/nhs", key))
                .when(
                    F.col("_nhs_kind") == "nhs_placeholder",
                    _one_of(NHS_PLACEHOLDERS, draws, f"{stream}/nhs/placeholder", key),
                )
                .otherwise(F.col("nhs_number")),
            )
            .withColumn(
                "dob_written",
                F.when(F.col("_dob_kind") == "dob_swap", F.make_date(year, day, month))
                .when(
                    F.col("_dob_kind") == "dob_digit",
                    F.when(
                        (draws.uniform(f"{stream}/dob/where", *key) < 0.5) & year_ok,
                        F.make_date(new_year, month, day),
                    ).otherwise(F.make_date(year, month, other_day)),
                )
                .when(F.col("_dob_kind") == "dob_placeholder", F.lit(DOB_PLACEHOLDER))
                .otherwise(dob)
                .cast("string"),
            )
            .withColumn(
                "sex_written",
                F.when(
                    F.col("_sex_kind") == "sex_unknown",
                    F.when(u("sex/which") < 0.5, F.lit("0")).otherwise(F.lit("9")),
                )
                .when(F.col("_sex_kind") == "sex_wrong", (3 - F.col("sex")).cast("string"))
                .otherwise(F.col("sex").cast("string")),
            )
            .withColumn(
                "_postcode",
                F.when(F.col("_postcode_kind") == "postcode_stale", stale)
                .when(F.col("_postcode_kind") == "postcode_missing", None)
                .when(
                    F.col("_postcode_kind") == "postcode_pseudo",
                    _one_of(PSEUDO_POSTCODES, draws, f"{stream}/postcode/pseudo", key),
                )
                .otherwise(F.col("true_postcode")),
            )
            .withColumn(
                "_format_kind",
                F.when(
                    F.col("_postcode").isNotNull()
                    & (F.col("_postcode_kind").isNull() | (F.col("_postcode_kind") != "postcode_pseudo"))
                    & (u("postcode/format") < rates.postcode_format),
                    F.lit("postcode_format"),
                ),
            )
            .withColumn(
                "postcode_written",
                F.when(F.col("_format_kind").isNull(), F.col("_postcode")).otherwise(
                    _reformat_postcode(F.col("_postcode"), draws.below(f"{stream}/postcode/style", *key, n=4))
                ),
            )
            .withColumn(
                "noise",
                F.filter(
                    F.array("_nhs_kind", "_dob_kind", "_sex_kind", "_postcode_kind", "_format_kind"),
                    lambda kind: kind.isNotNull(),
                ),
            )
            .drop("_nhs_kind", "_dob_kind", "_sex_kind", "_postcode_kind", "_postcode", "_format_kind")
        )

    return transform


def _reformat_postcode(postcode: Column, style: Column) -> Column:
    """The same postcode as people type it: lower case, no space, two spaces, or both."""
    squeezed = F.regexp_replace(postcode, " ", "")
    return (
        F.when(style == 0, F.lower(postcode))
        .when(style == 1, squeezed)
        .when(style == 2, F.regexp_replace(postcode, " ", "  "))
        .otherwise(F.lower(squeezed))
    )


@dataclass(frozen=True)
class DirtyFields:
    """Where a dataset's rows can be broken."""

    date: str  # a required date column
    numeric: str  # a numeric column
    junk: tuple[str, ...]  # what appears there instead of a number
    nhs: str
    code: str | None = None  # a coded column: SNOMED_CODE or DIAG_01
    snomed: bool = False


DIRTY_FIELDS: dict[str, DirtyFields] = {
    "gp_patients": DirtyFields("REG_DATE", "SEX", ("M", "F", "U"), "NHS_NUMBER"),
    "gp_events": DirtyFields(
        "EVENT_DATE", "VALUE", ("high", "<5", "1,5", "n/a", "12..3", '6"'), "NHS_NUMBER",
        code="SNOMED_CODE", snomed=True,
    ),
    "hes_apc": DirtyFields("ADMIDATE", "ADMIMETH", ("EL", "EM", "2A"), "NEWNHSNO", code="DIAG_01"),
    "hes_op": DirtyFields("APPTDATE", "ATTENDED", ("Y", "N", "DNA"), "NEWNHSNO", code="DIAG_01"),
    "hes_ae": DirtyFields("ARRIVALDATE", "AEATTENDDISP", ("ADM", "DIS", "1 "), "NEWNHSNO", code="DIAG_01"),
}

_BAD_DATE_STYLES = 4


def _bad_date(text: Column, style: Column) -> Column:
    """A date as it should not be written: day first, no dashes, 30 February, month 13."""
    day = F.try_to_date(text, "yyyy-MM-dd")
    return (
        F.when(style == 0, F.date_format(day, "dd/MM/yyyy"))
        .when(style == 1, F.date_format(day, "yyyyMMdd"))
        .when(style == 2, F.concat(F.substring(text, 1, 4), F.lit("-02-30")))
        .otherwise(F.concat(F.substring(text, 1, 5), F.lit("13"), F.substring(text, 8, 3)))
    )


def _bad_code(code: Column, snomed: bool) -> Column:
    """A code that fails its check: a SNOMED CT id with its last digit changed (Verhoeff
    catches every single-digit change), an ICD-10 code that does not start with a letter."""
    if snomed:
        last = (F.substr(code, F.length(code), F.lit(1)).cast("int") + 1) % 10
        return F.concat(F.substr(code, F.lit(1), F.length(code) - 1), last.cast("string"))
    return F.concat(F.lit("9"), F.substring(F.coalesce(code, F.lit("R69X")), 2, 3))


def with_dirty_rows(dataset: str, rates: DirtyRates, structural: bool, draws: Draws, keys: Sequence[str]):
    """Break ~1% of rows; `dirty` names how (null for a clean row).

    Runs on the rows as written (text columns). `extra_field` and `missing_field` are only
    flagged here, the CSV line builder adds or drops the field; without `structural`
    (Parquet) they never occur.
    """
    fields = DIRTY_FIELDS[dataset]
    kinds = rates.kinds(structural)
    if fields.code is None:
        kinds = {k: v for k, v in kinds.items() if k != "unknown_code"}

    def transform(df: DataFrame) -> DataFrame:
        key = [F.col(k) for k in keys]
        stream = f"dirty/{dataset}"
        kind = _kind(draws.uniform(stream, *key), kinds)
        dirty = F.col("dirty")
        broken = {
            fields.date: F.when(
                dirty == "bad_date",
                _bad_date(F.col(fields.date), draws.below(f"{stream}/date", *key, n=_BAD_DATE_STYLES)),
            ),
            fields.numeric: F.when(dirty == "non_numeric", _one_of(fields.junk, draws, f"{stream}/junk", key)),
            fields.nhs: F.when(dirty == "short_nhs", F.substring(F.col(fields.nhs), 1, 9)),
        }
        if fields.code is not None:
            broken[fields.code] = F.when(dirty == "unknown_code", _bad_code(F.col(fields.code), fields.snomed))
        df = df.withColumn(
            "dirty", F.when((kind == "short_nhs") & F.col(fields.nhs).isNull(), None).otherwise(kind)
        )
        return df.withColumns({column: F.coalesce(value, F.col(column)) for column, value in broken.items()})

    return transform
