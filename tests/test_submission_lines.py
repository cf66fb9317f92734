"""Files as numbered lines: the split must match the plain definition of a line, whatever
the block boundaries, because line numbers are how quarantine points back into a file."""

from __future__ import annotations

from pathlib import Path

from chispa import assert_df_equality
from hypothesis import given, settings
from hypothesis import strategies as st

from caredata_spark.submission_lines import LINES_SCHEMA, _first_line, line_batches, read_lines


def reference_lines(content: bytes) -> list[bytes]:
    """Lines as RFC 4180 readers see them: split on LF, a CR before it dropped, and no
    empty line after a final LF."""
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def split_lines(blocks: list[bytes]) -> list[tuple[int, bytes]]:
    return [
        (first + i, line)
        for first, lines in line_batches(iter(blocks))
        for i, line in enumerate(lines.to_pylist())
    ]


CONTENT = st.lists(
    st.sampled_from([b"a", b"bc", b",", b'"', b"\r", b"\n", b"\r\n", b"\xff", b""]), max_size=40
).map(b"".join)
CUTS = st.lists(st.integers(min_value=0, max_value=60), max_size=6)


def blocks_of(content: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(content), *[min(c, len(content)) for c in cuts]})
    return [content[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(content=CONTENT, cuts=CUTS)
def test_lines_are_the_same_wherever_blocks_end(content: bytes, cuts: list[int]) -> None:
    assert split_lines(blocks_of(content, cuts)) == list(enumerate(reference_lines(content), start=1))


@settings(max_examples=300, deadline=None)
@given(content=CONTENT, cuts=CUTS)
def test_the_inspected_header_is_the_first_line_read(content: bytes, cuts: list[int]) -> None:
    """Inspection names a file's columns from the line the reader numbers 1."""
    assert _first_line(iter(blocks_of(content, cuts))) == next(iter(reference_lines(content)), None)


def test_line_numbers_run_on_across_blocks() -> None:
    assert split_lines([b"h\r\n1,a\n2", b",b\r", b"\n\n3,c"]) == [(1, b"h"), (2, b"1,a"), (3, b"2,b"), (4, b""), (5, b"3,c")]


def test_read_lines_numbers_each_file_from_its_header(spark, tmp_path: Path) -> None:
    crlf = tmp_path / "a.csv"
    crlf.write_bytes(b"H1,H2\r\nx,1\r\ny,2")  # Windows line ends, no final newline
    plain = tmp_path / "b.csv"
    plain.write_bytes(b"H1,H2\nz,3\n")
    lines = read_lines(spark, [("s-a", str(crlf), False), ("s-b", str(plain), False)], None)
    expected = spark.createDataFrame(
        [
            ("s-a", 1, b"H1,H2"), ("s-a", 2, b"x,1"), ("s-a", 3, b"y,2"),
            ("s-b", 1, b"H1,H2"), ("s-b", 2, b"z,3"),
        ],
        LINES_SCHEMA,
    )
    assert_df_equality(lines, expected, ignore_row_order=True)
