"""From numbered submission lines to the contract's columns, with row-level parse problems.

Each file's header (line 1) says where its columns are, so column order may differ between
files and extra columns are ignored. Lines are parsed by Spark's CSV parser (`from_csv`,
RFC 4180 quoting, empty field = missing); a line that is not exactly as many RFC 4180
fields as its header names is marked MALFORMED_ROW and later quarantined with its raw bytes.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons
from caredata_spark.contract import Dataset

BOM = "\ufeff"
CSV_OPTIONS = {"mode": "PERMISSIVE", "nullValue": "", "emptyValue": "", "quote": '"', "escape": '"'}


def _text(line: Column) -> Column:
    return line.cast("string")


def header_columns(line: str) -> list[str] | None:
    """Column names of a header line (BOM, quotes and surrounding spaces removed), or None
    if Python's csv cannot read it (a name over its 128 KiB field limit).

    Read with RFC 4180 quoting like the rows, so a quoted name holding a comma is one name
    and rows are not all a field too short. One line per file, on the driver: Python's csv.
    """
    try:
        names = next(csv.reader([line.lstrip(BOM)]), [])
    except csv.Error:
        return None
    return [name.strip().strip('"').strip() for name in names]


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


# An RFC 4180 field: quoted, with any quote inside doubled, or plain, with no quote or comma.
# A quoted field may not hold NUL either: from_csv drops it there (tests/test_parsing.py).
# Possessive quantifiers never backtrack, and the JVM's regex engine then takes no stack per
# character, so a long quoted field cannot overflow it (the former `"([^"]|"")*"` took the
# Spark context down on a 1 MB quoted field).
_QUOTED_FIELD = r'"[^"\x00]*+(?:""[^"\x00]*+)*+"'
_FIELD = f'(?:{_QUOTED_FIELD}|[^",]*+)'


def _rfc4180_record(width: int) -> str:
    """A regular expression matching a line of exactly `width` RFC 4180 fields."""
    return rf"\A{_FIELD}(?:,{_FIELD}){{{width - 1}}}\z"


def malformed(text: Column, width: int) -> Column:
    """A line that is not `width` RFC 4180 fields, or is blank.

    from_csv opens a quoted section only at a field's start and keeps any other quote as
    data, so a check counting commas outside any pair of quotes passed lines it then read
    into shifted columns; a line with a quote must now be `width` RFC 4180 fields, which
    from_csv reads as RFC 4180 does. Almost no line has a quote, so a line without one is
    split on commas: cheaper than the regular expression (CASE WHEN evaluates one branch).
    """
    has_quote = F.instr(text, '"') > 0
    wrong_shape = F.when(has_quote, ~text.rlike(_rfc4180_record(width))).otherwise(
        F.size(F.split(text, ",")) != width
    )
    return wrong_shape | (F.trim(text) == "")


def parse_lines(dataset: Dataset, header: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    """Parse the data lines of files sharing one header into the dataset's columns.

    Input: submission_id, line_number, line (binary). Output: submission_id, line_number,
    line, the contract columns (strings) and `parse_problem` (MALFORMED_ROW or null).
    Files are grouped by header so each group parses with a schema in its own column order:
    every field is then a plain struct field, and the plan stays linear in the width.
    """
    fields = [f"_c{i}" for i in range(len(header))]
    position = {name: fields[i] for i, name in reversed(list(enumerate(header)))}
    schema = ", ".join(f"{f} string" for f in fields)

    def transform(lines: DataFrame) -> DataFrame:
        text = _text(F.col("line"))
        parsed = lines.filter(F.col("line_number") > 1).select(
            "submission_id",
            "line_number",
            "line",
            F.from_csv(text, schema, CSV_OPTIONS).alias("fields"),
            F.when(malformed(text, len(header)), F.lit(reasons.MALFORMED_ROW)).alias("parse_problem"),
        )
        return parsed.select(
            "submission_id",
            "line_number",
            "line",
            *[F.col("fields")[position[name]].alias(name) for name in dataset.columns],
            "parse_problem",
        )

    return transform
