"""Lines to columns (`caredata_spark.parsing`): a header's names and a line's fields must be
the ones RFC 4180 gives, because a line the checks pass is read by `from_csv` column by
column, and any disagreement puts values (an NHS number, a postcode) in the wrong column."""

from __future__ import annotations

import csv

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons

from caredata_spark.contract import DATASETS
from caredata_spark.parsing import CSV_OPTIONS, header_columns, malformed, parse_lines

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


T4_HEADER = ["ATTENDKEY", "PROCODE", "APPTDATE", "NOTES", "NEWNHSNO", "TRETSPEF", "DOB", "SEX", "HOMEADD",
             "ATTENDED", "DIAG_01"]


def test_a_quote_inside_a_field_is_quarantined_not_read_shifted(spark: SparkSession) -> None:
    """from_csv opens a quoted section only at a field's start; a check that counted from
    any quote passed these lines and `from_csv` put the NHS number in TRETSPEF (review)."""
    tail = "9434765919,100,1980-05-05,1,LS1 4AB,5,E119"
    rows = parsed(spark, T4_HEADER, [
        f'K1,RTH,2024-03-01,said "no, thanks" later,{tail}',
        f'K2,RTH,2024-03-01,a"b,c"d,{tail}',
        f'K3,RTH,2024-03-01,"a,b"x,{tail}',  # text after a closing quote
        f'K4,RTH,2024-03-01, "a,b",{tail}',  # a space before the opening quote
        f'K5,RTH,2024-03-01,"a,b" ,{tail}',  # from_csv drops the space after the closing quote
        f'K6,RTH,2024-03-01,x"y,{tail}',  # one stray quote: not RFC 4180 either
        f'K7,RTH,2024-03-01,"a,""b"", c",{tail}',  # RFC 4180: accepted, columns in place
        f'K8,RTH,2024-03-01,"line\nbreak",{tail}',  # a quoted newline is data
        f'K9,RTH,2024-03-01,ok,{tail.replace("E119", chr(34) + "E1,19" + chr(34))}',
        f'K10,RTH,2024-03-01,"a\x00b",{tail}',  # from_csv would drop the NUL
    ])
    for line in [*range(2, 8), 11]:
        assert rows[line][-1] == reasons.MALFORMED_ROW, rows[line]
    assert rows[8] == ("K7", "9434765919", "100", "5", "E119", None)
    assert rows[9] == ("K8", "9434765919", "100", "5", "E119", None)
    assert rows[10] == ("K9", "9434765919", "100", "5", "E1,19", None)


def rfc4180_field(value: str, quoted: bool) -> str:
    needs = any(c in value for c in ',"\r\n')
    return '"' + value.replace('"', '""') + '"' if quoted or needs else value


WIDTH = 3
ODD = [",", '"', " ", "\n", "\r", "\\", "#", "'", "é", "\t"]
FIELD = st.text(alphabet=st.sampled_from(["a", "b", *ODD]), max_size=5)
RECORD = st.lists(st.tuples(FIELD, st.booleans()), min_size=WIDTH, max_size=WIDTH)
NOISE = st.text(alphabet=st.sampled_from(["a", ",", ",", '"', '"', '"', " ", "\n", "\r", "\x00"]), max_size=14)


HIDE_LINE_ENDS, SHOW_LINE_ENDS = str.maketrans("\r\n", "\x01\x02"), str.maketrans("\x01\x02", "\r\n")


def rfc4180_fields(line: str) -> list[str]:
    """Python's csv fields of one record (which never sees CR or LF as its end: it has none)."""
    return [v.translate(SHOW_LINE_ENDS) for v in next(csv.reader([line.translate(HIDE_LINE_ENDS)]))]


def read_by_spark(spark: SparkSession, lines: list[str]) -> list[tuple[bool, list[str | None], bool]]:
    """Per line: the check's verdict, from_csv's fields (parse_lines' options) and whether
    from_csv itself found a token count other than WIDTH (its corrupt-record column)."""
    schema = ", ".join([f"c{i} string" for i in range(WIDTH)] + ["_width_differs string"])
    options = {**CSV_OPTIONS, "columnNameOfCorruptRecord": "_width_differs"}
    frame = spark.createDataFrame(list(enumerate(lines)), "i int, line string")
    rows = frame.select(
        "i", malformed(F.col("line"), WIDTH).alias("bad"), F.from_csv("line", schema, options).alias("f")
    ).orderBy("i").collect()
    return [(r.bad, [r.f[f"c{i}"] for i in range(WIDTH)], r.f["_width_differs"] is not None) for r in rows]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(RECORD, min_size=1, max_size=80), noise=st.lists(NOISE, min_size=1, max_size=120))
def test_the_width_check_agrees_with_from_csv(spark: SparkSession, records: list, noise: list[str]) -> None:
    """Every RFC 4180 record of the header's width passes, and from_csv reads it as Python's
    csv does; any line that passes, however its quotes fall, is read by from_csv as exactly
    WIDTH fields, the ones Python's csv finds (empty = missing)."""
    valid = [",".join(rfc4180_field(v, q) for v, q in r) for r in records]
    valid = [line for line in valid if line.strip()]  # a blank line is malformed on purpose
    for line, (bad, fields, width_differs) in zip(valid + noise, read_by_spark(spark, valid + noise)):
        if line in valid:
            assert not bad, line
        if not bad:
            expected = rfc4180_fields(line)
            assert (fields, width_differs) == ([v or None for v in expected], False), line
