"""Lines to columns (`caredata_spark.parsing`): a header's names and a line's fields must be
the ones RFC 4180 gives, because a line the checks pass is read by `from_csv` column by
column, and any disagreement puts values (an NHS number, a postcode) in the wrong column."""

from __future__ import annotations

from pyspark.sql import SparkSession

from caredata_spark.contract import DATASETS
from caredata_spark.parsing import header_columns, parse_lines

HES_OP = DATASETS["hes_op"]


def parsed(spark: SparkSession, header: list[str], lines: list[str]) -> dict[int, tuple]:
    """line number -> (ATTENDKEY, NEWNHSNO, TRETSPEF, ATTENDED, DIAG_01, parse_problem)."""
    frame = spark.createDataFrame(
        [("s1", n, line.encode()) for n, line in enumerate(lines, start=2)],
        "submission_id string, line_number long, line binary",
    )
    rows = frame.transform(parse_lines(HES_OP, header)).collect()
    keep = ["ATTENDKEY", "NEWNHSNO", "TRETSPEF", "ATTENDED", "DIAG_01", "parse_problem"]
    return {r["line_number"]: tuple(r[c] for c in keep) for r in rows}


def test_a_quoted_header_name_may_hold_a_comma() -> None:
    assert header_columns('\ufeffA,"B,C", D ,"E ""x"" y"') == ["A", "B,C", "D", 'E "x" y']
    assert header_columns(' "A" ,B') == ["A", "B"]  # quotes around a padded name, as before
    assert header_columns("A," + "x" * 200_000) is None  # beyond csv's field limit: unreadable


def test_rows_under_a_header_with_a_quoted_comma_keep_their_columns(spark: SparkSession) -> None:
    header = header_columns(
        'ATTENDKEY,PROCODE,"NOTES, free",NEWNHSNO,DOB,SEX,HOMEADD,APPTDATE,ATTENDED,TRETSPEF,DIAG_01'
    )
    assert header is not None
    rows = parsed(spark, header, ["K1,RTH,n,9434765919,1980-05-05,1,LS1 4AB,2024-03-01,5,100,E119"])
    assert rows[2] == ("K1", "9434765919", "100", "5", "E119", None)
