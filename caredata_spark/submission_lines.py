"""Submissions as numbered lines: one Spark partition per file, decrypting on the executor.

A Python Data Source reads each file (plain CSV, or an envelope decrypted chunk by chunk
in memory, so no plaintext ever touches disk) and yields Arrow batches of
(submission_id, line_number, line bytes). Spark's own CSV parser (`from_csv`) then parses
the lines in the JVM. Line numbers are exact because one task reads one file start to end;
parallelism comes from the many files that land each day.

A "line" here is an RFC 4180 record: a newline inside a quoted field is data, so a record
may span several physical lines, and its `line_number` is the physical line it starts on
(where an operator finds it in the file). A quote opens a field only at the field's start,
as from_csv and Python's csv read it; a quote elsewhere is data. A record longer than
MAX_RECORD_BYTES, or still open at the end of the file, is read line by line instead.

An encrypted file that fails authentication part-way fails its task and so the whole job,
before anything is committed; ingest inspects files first (`inspect_files`: header line,
envelope authenticated end to end) so a bad file is refused on its own, with its reason,
instead of failing the run.
"""

from __future__ import annotations

import json
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.types import StructType

FORMAT = "caredata_lines"
LINES_SCHEMA = "submission_id string, line_number long, line binary"
BLOCK_BYTES = 8 << 20
HEAD_BYTES = 64 << 10  # a plain file's header is read in pieces this size
NEWLINE, CR, QUOTE, COMMA = ord("\n"), ord("\r"), ord('"'), ord(",")
# A record longer than this (or still open at the end of the file) is read line by line,
# so an unbalanced quote cannot swallow the rest of a file into one record: its line has an
# open quote (MALFORMED_ROW, quarantined) and the lines after it, up to the next quote that
# closes it, are read as they stand. Thousands of times any real record.
MAX_RECORD_BYTES = 1 << 20
# sessions the source is registered with: registering again replaces it, with a warning
_REGISTERED: weakref.WeakSet[SparkSession] = weakref.WeakSet()


@dataclass(frozen=True)
class FileToRead(InputPartition):
    submission_id: str
    path: str
    encrypted: bool


def _blocks(file: FileToRead, key_file: str | None) -> Iterator[bytes]:
    if not file.encrypted:
        with open(file.path, "rb") as handle:
            while block := handle.read(BLOCK_BYTES):
                yield block
        return
    from caredata_spark.envelope import decrypt_stream
    from caredata_spark.keys import TransportPrivateKey

    if key_file is None:
        raise ValueError("encrypted submission but no transport key file given")
    with open(key_file, "rb") as handle:
        key = TransportPrivateKey.from_seed(handle.read())
    yield from decrypt_stream(file.path, key)


def _preceded_by(data: np.ndarray, positions: np.ndarray, chars: tuple[int, ...]) -> np.ndarray:
    """Whether the byte before each of the sorted `positions` is one of `chars`; position 0
    (a record's or a line's start) always is."""
    before = data[positions - 1]
    found = before == chars[0]
    for char in chars[1:]:
        found |= before == char
    found[:1] |= positions[:1] == 0
    return found


def _open_at(data: np.ndarray, newlines: np.ndarray, initially_open: bool) -> np.ndarray:
    """Whether a quoted field is open at each of the `newlines` of `data`, and at its end.

    Inside a field quotes come in escaped pairs, so only a run of an odd number of quotes
    changes anything: one at a field's start (after a comma or newline) opens a field or
    closes the open one; any other closes the open one or is data. Usually every other
    quote opens a field where it stands (at a field's start, or within a run), and then
    the parity of the quotes before a newline is the answer; otherwise a field is open
    after a run if the field-start runs since the last other run are odd in number. Either
    way a few array operations over the quotes.
    """
    is_quote = data == QUOTE
    quotes = np.flatnonzero(is_quote)
    if len(quotes) == 0:
        return np.full(len(newlines) + 1, initially_open)
    # every other quote at a field's start, or within a run: parity alone is exact
    if np.all(_preceded_by(data, quotes[int(initially_open) :: 2], (COMMA, NEWLINE, QUOTE))):
        per_line = np.bitwise_xor.reduceat(is_quote.view(np.uint8), np.concatenate(([0], newlines)))
        return np.bitwise_xor.accumulate(per_line).astype(bool) ^ initially_open
    run_start = np.ones(len(quotes), dtype=bool)
    np.not_equal(quotes[1:], quotes[:-1] + 1, out=run_start[1:])
    first = np.flatnonzero(run_start)
    runs = quotes[first[np.diff(first, append=len(quotes)) % 2 == 1]]  # the odd runs
    field_start = _preceded_by(data, runs, (COMMA, NEWLINE))
    toggles = np.cumsum(field_start)
    since = toggles - np.maximum.accumulate(np.where(field_start, 0, toggles))  # since the last other
    as_initially = initially_open & ~np.maximum.accumulate(~field_start)  # no other run yet
    open_after = np.concatenate(([initially_open], (since % 2 == 1) ^ as_initially))
    return open_after[np.searchsorted(runs, np.append(newlines, len(data)))]


def _record_newlines(
    data: np.ndarray, newlines: np.ndarray, final: bool, in_long: bool
) -> tuple[np.ndarray, bool]:
    """Which `newlines` of `data` end a record (see `_records`), and whether `data` ends
    inside an over-long record, whose lines are records (`in_long`: it starts inside one).

    One pass of array operations: records are found by quoting alone, then every newline
    of an over-long record marked.
    """
    closed = ~_open_at(data, newlines, in_long)
    ending = closed[:-1]
    closing = newlines[ending]
    begins = np.concatenate(([0], closing + 1))  # of each record, the last one unfinished
    long = np.append(closing, len(data)) - begins > MAX_RECORD_BYTES
    long[0] |= in_long
    tail_lines = len(newlines) > 0 and not ending[-1]  # the unfinished record spans lines
    long[-1] &= tail_lines or (in_long and len(closing) == 0)  # a long line alone is a line
    long[-1] |= final and tail_lines and not closed[-1]  # open at the end of the file
    record_of = np.cumsum(ending) - ending
    return ending | long[record_of], bool(long[-1]) and not final


def _records(data: bytes, final: bool, in_long: bool = False) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Where the whole records of `data` end, the line each starts on (0 for data's first),
    how many lines they take, and whether what follows is inside an over-long record.

    `data` starts at a record's start, or inside an over-long record (`in_long`). A record
    ends at a newline outside quoted fields or, at the end of the file (`final`), at
    `len(data)`. One longer than MAX_RECORD_BYTES, or still open at the end of the file, is
    over-long: each of its lines is a record. A block without a quote (most) is split at
    every newline, as before.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(array == NEWLINE)
    if b'"' in data:
        ending, in_long = _record_newlines(array, newlines, final, in_long)
        line_ends = np.flatnonzero(ending)
    else:
        line_ends = np.arange(len(newlines))
    ends = newlines[line_ends]
    lines = int(line_ends[-1]) + 1 if len(line_ends) else 0
    firsts = np.concatenate(([0], line_ends + 1))[: len(line_ends)]
    if final and (ends[-1] + 1 if len(ends) else 0) < len(data):
        ends, firsts = np.append(ends, len(data)), np.append(firsts, lines)
    return ends, firsts, lines, in_long


def _lines_of(data: np.ndarray, ends: np.ndarray) -> pa.BinaryArray:
    """The records of `data` ending at `ends` (each a newline's position, the last possibly
    `len(data)` for a last record without one), without that newline or a carriage return
    before it (a quoted field keeps its own): one Arrow array built from two buffers, never
    a Python object per record."""
    starts = np.concatenate(([0], ends[:-1] + 1))
    carriage = (ends > starts) & (data[np.maximum(ends - 1, 0)] == CR)
    stops = ends - carriage
    offsets = np.zeros(len(ends) + 1, dtype=np.int32)
    np.cumsum(stops - starts, out=offsets[1:])
    kept = np.ones(int(ends[-1]), dtype=bool)
    kept[ends[:-1]] = False
    kept[stops[carriage]] = False
    values = data[: int(ends[-1])][kept]
    return pa.Array.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def line_batches(blocks: Iterator[bytes]) -> Iterator[tuple[np.ndarray, pa.BinaryArray]]:
    """(line number of each record, records) per block of bytes; a last record without
    newline counts.

    Records are found with numpy on each block, so a file of millions of lines costs a few
    array operations per 8 MB block rather than Python work per line.
    """
    carry, in_long = b"", False
    number = 1
    for block in blocks:
        data = carry + block
        ends, firsts, lines, in_long = _records(data, False, in_long)
        if len(ends) == 0:
            carry = data
            continue
        yield number + firsts, _lines_of(np.frombuffer(data, dtype=np.uint8), ends)
        number += lines
        carry = data[int(ends[-1]) + 1 :]
    if carry:
        ends, firsts, _, _ = _records(carry, True, in_long)
        yield number + firsts, _lines_of(np.frombuffer(carry, dtype=np.uint8), ends)


class _LinesReader(DataSourceReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.files = [FileToRead(*f) for f in json.loads(options["files"])]
        self.key_file = options.get("transport_key_file")

    def partitions(self) -> list[InputPartition]:
        return list(self.files)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        file: FileToRead = partition  # type: ignore[assignment]
        for numbers, lines in line_batches(_blocks(file, self.key_file)):
            yield pa.RecordBatch.from_arrays(
                [
                    pa.repeat(pa.scalar(file.submission_id, pa.string()), len(lines)),
                    pa.array(numbers),
                    lines,
                ],
                names=["submission_id", "line_number", "line"],
            )


class SubmissionLinesSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> str:
        return LINES_SCHEMA

    def reader(self, schema: StructType) -> DataSourceReader:
        return _LinesReader(self.options)


def read_lines(
    spark: SparkSession, files: list[tuple[str, str, bool]], transport_key_file: str | None
) -> DataFrame:
    """Lines of (submission_id, path, encrypted) files; the key file is read by executors."""
    if not files:  # a source with no partitions would still run one (empty) task
        return spark.createDataFrame([], LINES_SCHEMA)
    if spark not in _REGISTERED:
        spark.dataSource.register(SubmissionLinesSource)
        _REGISTERED.add(spark)
    reader = spark.read.format(FORMAT).option("files", json.dumps(files))
    if transport_key_file is not None:
        reader = reader.option("transport_key_file", transport_key_file)
    return reader.load()


def _first_record(blocks: Iterator[bytes]) -> bytes | None:
    """The first record as `line_batches` splits it, reading blocks only until it ends (or
    past BLOCK_BYTES: a header is never that long)."""
    head = b""
    for block in blocks:
        head += block
        ends = _records(head, final=False)[0]
        if len(ends) or len(head) > BLOCK_BYTES:
            head = head[: int(ends[0]) + 1] if len(ends) else head
            break
    first_batch = next(line_batches(iter([head])), None)
    return None if first_batch is None else first_batch[1][0].as_py()


def _inspect(file: FileToRead, key_file: str | None) -> tuple[str, str | None, str | None]:
    """(submission_id, header line or None, refusal reason or None) of one file."""
    from caredata_spark.errors import InputRefused

    try:
        if file.encrypted:
            blocks = _blocks(file, key_file)
            first = _first_record(blocks)
            deque(blocks, maxlen=0)  # the rest too, so the envelope is authenticated whole
        else:
            with open(file.path, "rb") as handle:
                first = _first_record(iter(lambda: handle.read(HEAD_BYTES), b""))
    except InputRefused as err:
        return file.submission_id, None, str(err)
    if first is None:
        return file.submission_id, None, "empty file: no header line"
    try:
        return file.submission_id, first.decode("utf-8"), None
    except UnicodeDecodeError:
        return file.submission_id, None, "header line is not UTF-8"


def inspect_files(
    spark: SparkSession, files: list[tuple[str, str, bool]], transport_key_file: str | None
) -> dict[str, tuple[str | None, str | None]]:
    """Header line or refusal per file, one task per file on executors.

    Envelopes are decrypted and authenticated end to end here, so a wrong key, a tampered
    or a truncated file is refused on its own before any of it is read as data.
    """
    if not files:
        return {}
    results = (
        spark.sparkContext.parallelize([FileToRead(*f) for f in files], len(files))
        .map(lambda f: _inspect(f, transport_key_file))
        .collect()  # one small tuple per file, never per row
    )
    return {sid: (header, refusal) for sid, header, refusal in results}
