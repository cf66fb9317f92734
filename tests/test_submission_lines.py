"""Files as numbered records: the split must match the plain definition of a record,
whatever the block boundaries, because line numbers are how quarantine points back into a
file, and a record split at a quoted newline becomes fragments (or a phantom row)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from unittest import mock

from chispa import assert_df_equality
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from caredata_spark import reasons, submission_lines
from caredata_spark.contract import DATASETS
from caredata_spark.parsing import header_columns, parse_lines
from caredata_spark.submission_lines import (
    LINES_SCHEMA,
    MAX_RECORD_BYTES,
    _first_record,
    line_batches,
    read_lines,
)


def _scan(content: bytes, start: int) -> tuple[int, bool]:
    """From a record's start: the first newline outside quoted fields (or the end), and
    whether no quoted field is open there. A quote opens a field only at a field's start;
    inside one, a doubled quote is data and a single one closes it."""
    inside, field_start, i = False, True, start
    while i < len(content):
        byte = content[i : i + 1]
        if inside and byte == b'"' and content[i + 1 : i + 2] == b'"':
            i += 1
        elif inside:
            inside = byte != b'"'
        elif byte == b"\n":
            return i, True
        else:
            inside = byte == b'"' and field_start
        field_start = byte == b"," and not inside
        i += 1
    return len(content), not inside


def reference_records(content: bytes, cap: int = MAX_RECORD_BYTES) -> list[tuple[int, bytes]]:
    """(line it starts on, record), one byte at a time: a record ends at a newline outside
    quoted fields, or at the end; one longer than `cap`, or still open at the end, is read
    line by line. A CR before a record's end is dropped, and there is no empty record after
    a final newline."""
    records, start = [], 0
    while start < len(content):
        end, closed = _scan(content, start)
        whole = closed and end - start <= cap
        stops = [end] if whole else [i for i in range(start, end) if content[i : i + 1] == b"\n"] + [end]
        for stop in stops:
            if start == stop == len(content):
                break  # after a final newline
            record = content[start:stop]
            records.append((content.count(b"\n", 0, start) + 1, record[:-1] if record.endswith(b"\r") else record))
            start = stop + 1
    return records


def split_lines(blocks: list[bytes]) -> list[tuple[int, bytes]]:
    return [
        (int(number), line)
        for numbers, lines in line_batches(iter(blocks))
        for number, line in zip(numbers, lines.to_pylist(), strict=True)
    ]


CONTENT = st.lists(
    st.sampled_from([b"a", b"bc", b",", b'"', b'""', b',"', b"\r", b"\n", b"\r\n", b"\xff", b""]), max_size=40
).map(b"".join)
CUTS = st.lists(st.integers(min_value=0, max_value=60), max_size=6)
CAPS = st.sampled_from([3, 8, MAX_RECORD_BYTES])


def blocks_of(content: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(content), *[min(c, len(content)) for c in cuts]})
    return [content[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=600, deadline=None)
@given(content=CONTENT, cuts=CUTS, cap=CAPS)
def test_records_are_the_same_wherever_blocks_end(content: bytes, cuts: list[int], cap: int) -> None:
    with mock.patch.object(submission_lines, "MAX_RECORD_BYTES", cap):
        assert split_lines(blocks_of(content, cuts)) == reference_records(content, cap)


@settings(max_examples=300, deadline=None)
@given(content=CONTENT, cuts=CUTS, cap=CAPS)
def test_the_inspected_header_is_the_first_record_read(content: bytes, cuts: list[int], cap: int) -> None:
    """Inspection names a file's columns from the record the reader numbers 1."""
    with mock.patch.object(submission_lines, "MAX_RECORD_BYTES", cap):
        first = next(iter(reference_records(content, cap)), (1, None))[1]
        assert _first_record(iter(blocks_of(content, cuts))) == first


FIELDS = st.lists(st.text(alphabet=st.sampled_from(["a", ",", '"', "\n", "\r", " ", "é"]), max_size=4), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(FIELDS, min_size=1, max_size=8), crlf=st.booleans(), last_newline=st.booleans(), cuts=CUTS)
def test_well_formed_files_split_where_pythons_csv_reads_records(rows, crlf, last_newline, cuts) -> None:
    """RFC 4180 files, LF or CRLF, quoted newlines and CRs kept as data."""
    def written(row: list[str]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(row)  # quotes any field with CR or LF
        return out.getvalue()[:-2]

    terminator = "\r\n" if crlf else "\n"
    content = terminator.join(map(written, rows)) + (terminator if last_newline else "")
    assert list(csv.reader(io.StringIO(content, newline=""))) == rows
    records = [line.decode() for _, line in split_lines(blocks_of(content.encode(), cuts))]
    assert [list(csv.reader(io.StringIO(r, newline=""))) for r in records] == [[row] for row in rows]


def test_a_quoted_newline_is_data_and_numbers_count_physical_lines() -> None:
    content = b'h\r\nK1,"one\r\ntwo"\r\nK2,"a\nb,c\nz"\nK3,"x""\n"\nK4,ok'
    assert split_lines([content[:9], content[9:25], content[25:]]) == [
        (1, b"h"), (2, b'K1,"one\r\ntwo"'), (4, b'K2,"a\nb,c\nz"'), (7, b'K3,"x""\n"'), (9, b"K4,ok"),
    ]


def test_a_quote_inside_a_field_opens_nothing() -> None:
    assert split_lines([b'a"b,c\nsaid "no,\nx"y\n']) == [(1, b'a"b,c'), (2, b'said "no,'), (3, b'x"y')]


def test_an_unbalanced_quote_costs_one_line_not_the_rest_of_the_file() -> None:
    """Still open at the end of the file, or longer than MAX_RECORD_BYTES: the record is
    read line by line (its first has an open quote: MALFORMED_ROW), every line numbered."""
    assert split_lines([b'h\nK4,"a\nK5,b\nK6,c\n']) == [(1, b"h"), (2, b'K4,"a'), (3, b"K5,b"), (4, b"K6,c")]
    rows = 2 * MAX_RECORD_BYTES // 8
    content = b'h\r\nK1,"open\r\n' + b"K2,abc\r\n" * rows + b'K3,"x\r\ny"\r\nK4,"a\nb"\r\n'
    records = split_lines(blocks_of(content, [5, 1 << 20, 1 << 21]))
    assert records[:3] == [(1, b"h"), (2, b'K1,"open'), (3, b"K2,abc")]
    # K3's quote closes the over-long record, so K3 is split too; then records as usual
    assert records[-4:] == [(rows + 2, b"K2,abc"), (rows + 3, b'K3,"x'), (rows + 4, b'y"'), (rows + 5, b'K4,"a\nb"')]
    assert len(records) == rows + 5


def test_lines_that_keep_a_quote_open_cost_one_pass() -> None:
    """Every line closing a field and opening another: one over-long record read line by
    line, in array operations per block, not a pass per line."""
    content = b'b","c\n' * 400_000
    assert split_lines(blocks_of(content, [1 << 20])) == [(n, b'b","c') for n in range(1, 400_001)]


def test_line_numbers_run_on_across_blocks() -> None:
    assert split_lines([b"h\r\n1,a\n2", b",b\r", b"\n\n3,c"]) == [(1, b"h"), (2, b"1,a"), (3, b"2,b"), (4, b""), (5, b"3,c")]


def test_read_lines_numbers_each_file_from_its_header(spark, tmp_path: Path) -> None:
    crlf = tmp_path / "a.csv"
    crlf.write_bytes(b"H1,H2\r\nx,1\r\ny,2")  # Windows line ends, no final newline
    plain = tmp_path / "b.csv"
    plain.write_bytes(b"H1,H2\nz,3\n")
    quoted = tmp_path / "c.csv"
    quoted.write_bytes(b'H1,H2\r\n"x\r\ny",1\r\nz,2\r\n')
    files = [("s-a", str(crlf), False), ("s-b", str(plain), False), ("s-c", str(quoted), False)]
    lines = read_lines(spark, files, None)
    expected = spark.createDataFrame(
        [
            ("s-a", 1, b"H1,H2"), ("s-a", 2, b"x,1"), ("s-a", 3, b"y,2"),
            ("s-b", 1, b"H1,H2"), ("s-b", 2, b"z,3"),
            ("s-c", 1, b"H1,H2"), ("s-c", 2, b'"x\r\ny",1'), ("s-c", 4, b"z,2"),
        ],
        LINES_SCHEMA,
    )
    assert_df_equality(lines, expected, ignore_row_order=True)


def test_a_record_across_lines_is_one_row_and_no_fragment_a_phantom(spark, tmp_path: Path) -> None:
    """The review's files: a quoted CRLF stays in its accepted row; a quoted field whose
    middle line has the header's width is part of its record, not a row of its own."""
    tail = "9434765919,100,1980-05-05,1,LS1 4AB,5,E119"
    header = "ATTENDKEY,PROCODE,APPTDATE,NOTES,NEWNHSNO,TRETSPEF,DOB,SEX,HOMEADD,ATTENDED,DIAG_01"
    path = tmp_path / "op.csv"
    path.write_bytes("\r\n".join([
        header,
        f'K1,RTH,2024-03-01,"line one\r\nline two",{tail}',
        'K4,RTH,2024-03-01,"a', "K5,RTH,2024-03-02,b,,,,,,,", f'c",{tail}',
        f'K6,RTH,2024-03-01,x"y,{tail}',  # a stray quote: opens nothing, but is not RFC 4180
        f'K7,RTH,2024-03-01,"open,{tail}',  # open at the end of the file
    ]).encode())
    columns = header_columns(header)
    assert columns is not None
    rows = (
        read_lines(spark, [("s1", str(path), False)], None)
        .transform(parse_lines(DATASETS["hes_op"], columns))
        .select("line_number", "ATTENDKEY", "TRETSPEF", "parse_problem", F.col("line").cast("string"))
        .orderBy("line_number")
        .collect()
    )
    assert [tuple(r)[:3] for r in rows if r.parse_problem is None] == [(2, "K1", "100"), (4, "K4", "100")]
    assert [(r.line_number, r.parse_problem) for r in rows if r.parse_problem] == [
        (7, reasons.MALFORMED_ROW), (8, reasons.MALFORMED_ROW),
    ]
    assert rows[0].line == f'K1,RTH,2024-03-01,"line one\r\nline two",{tail}'
