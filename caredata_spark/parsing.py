"""From numbered submission lines to the contract's columns, with row-level parse problems.

Each file's header (line 1) says where its columns are, so column order may differ between
files and extra columns are ignored. Lines are parsed by Spark's CSV parser (`from_csv`,
RFC 4180 quoting, empty field = missing); a line whose field count differs from its
header's, or whose quotes do not balance, is marked MALFORMED_ROW and later quarantined
with its raw bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons
from caredata_spark.contract import Dataset

BOM = "\ufeff"
CSV_OPTIONS = {"mode": "PERMISSIVE", "nullValue": "", "emptyValue": "", "quote": '"', "escape": '"'}


def _text(line: Column) -> Column:
    return line.cast("string")


def headers(lines: DataFrame) -> DataFrame:
    """(submission_id, header: array of trimmed column names) from each file's first line."""
    first = F.regexp_replace(_text(F.col("line")), f"^{BOM}", "")
    names = F.transform(F.split(first, ","), lambda n: F.trim(F.regexp_replace(n, '"', "")))
    return lines.filter(F.col("line_number") == 1).select("submission_id", names.alias("header"))


def missing_columns(header: Sequence[str], dataset: Dataset) -> list[str]:
    return [c for c in dataset.columns if c not in header]


def parquet_rows(spark: SparkSession, submission_id: str, path: str, dataset: Dataset) -> DataFrame:
    """A Parquet submission in the shape `parse_lines` gives: row number and raw JSON row.

    Each file is read on its own because providers' files may type a column differently
    (an NHS number as integer in one, string in another); every column becomes a string,
    so validation is the same as for CSV.
    """
    rows = spark.read.parquet(path)
    raw = F.to_json(F.struct(*[F.col(c) for c in rows.columns])).cast("binary")
    return rows.select(
        F.lit(submission_id).alias("submission_id"),
        (F.col("_metadata.row_index") + 1).alias("line_number"),
        raw.alias("line"),
        *[F.col(c).cast("string").alias(c) for c in dataset.columns],
        F.lit(None).cast("string").alias("parse_problem"),
    )


def _field_count(text: Column) -> Column:
    """Fields on a CSV line: commas outside quoted sections, plus one."""
    unquoted = F.regexp_replace(text, '"([^"]|"")*"', "")
    return F.length(unquoted) - F.length(F.regexp_replace(unquoted, ",", "")) + 1


def _quotes_balanced(text: Column) -> Column:
    quotes = F.length(text) - F.length(F.regexp_replace(text, '"', ""))
    return quotes % 2 == 0


def parse_lines(dataset: Dataset, width: int) -> Callable[[DataFrame], DataFrame]:
    """Parse data lines joined with their file's header into the dataset's columns.

    Input: submission_id, line_number, line (binary), header (array<string>).
    Output: submission_id, line_number, line, the contract columns (strings), and
    `parse_problem` (MALFORMED_ROW or null). `width` is the widest header of the batch.
    """
    generic = ", ".join(f"_c{i} string" for i in range(width))

    def transform(lines: DataFrame) -> DataFrame:
        text = _text(F.col("line"))
        parsed = F.from_csv(text, generic, CSV_OPTIONS)
        fields = F.array(*[parsed[f"_c{i}"] for i in range(width)])
        columns = [
            F.element_at(fields, F.array_position(F.col("header"), name).cast("int")).alias(name)
            for name in dataset.columns
        ]
        malformed = (
            (_field_count(text) != F.size("header"))
            | ~_quotes_balanced(text)
            | (F.trim(text) == "")
        )
        return lines.filter(F.col("line_number") > 1).select(
            "submission_id",
            "line_number",
            "line",
            *columns,
            F.when(malformed, F.lit(reasons.MALFORMED_ROW)).alias("parse_problem"),
        )

    return transform
