"""Submissions as numbered lines: one Spark partition per file, decrypting on the executor.

A Python Data Source reads each file (plain CSV, or an envelope decrypted chunk by chunk
in memory, so no plaintext ever touches disk) and yields Arrow batches of
(submission_id, line_number, line bytes). Spark's own CSV parser (`from_csv`) then parses
the lines in the JVM. Line numbers are exact because one task reads one file start to end;
parallelism comes from the many files that land each day.

An encrypted file that fails authentication part-way fails its task and so the whole job,
before anything is committed; ingest inspects files first (`inspect_files`: header line,
envelope authenticated end to end) so a bad file is refused on its own, with its reason,
instead of failing the run.
"""

from __future__ import annotations

import json
import weakref
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
NEWLINE, CR = ord("\n"), ord("\r")
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


def _lines_of(data: np.ndarray, ends: np.ndarray) -> pa.BinaryArray:
    """The lines of `data` ending at `ends` (each a newline's position, the last possibly
    `len(data)` for a last line without one), without the newline or a carriage return
    before it: one Arrow array built from two buffers, never a Python object per line."""
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


def line_batches(blocks: Iterator[bytes]) -> Iterator[tuple[int, pa.BinaryArray]]:
    """(first line number, lines) per block of bytes; a last line without newline counts.

    Lines are found with numpy on each block, so a file of millions of lines costs a few
    array operations per 8 MB block rather than Python work per line.
    """
    carry = b""
    number = 1
    for block in blocks:
        data = np.frombuffer(carry + block, dtype=np.uint8)
        ends = np.flatnonzero(data == NEWLINE)
        if len(ends) == 0:
            carry = data.tobytes()
            continue
        lines = _lines_of(data, ends)
        yield number, lines
        number += len(lines)
        carry = data[int(ends[-1]) + 1 :].tobytes()
    if carry:
        data = np.frombuffer(carry, dtype=np.uint8)
        yield number, _lines_of(data, np.array([len(data)]))


class _LinesReader(DataSourceReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.files = [FileToRead(*f) for f in json.loads(options["files"])]
        self.key_file = options.get("transport_key_file")

    def partitions(self) -> list[InputPartition]:
        return list(self.files)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        file: FileToRead = partition  # type: ignore[assignment]
        for first, lines in line_batches(_blocks(file, self.key_file)):
            yield pa.RecordBatch.from_arrays(
                [
                    pa.repeat(pa.scalar(file.submission_id, pa.string()), len(lines)),
                    pa.array(np.arange(first, first + len(lines), dtype=np.int64)),
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


def _first_line(blocks: Iterator[bytes]) -> bytes | None:
    """The first line as `line_batches` splits it, having consumed every block (so an
    envelope is authenticated whole)."""
    head = b""
    for block in blocks:
        if NEWLINE not in head:
            head += block
    end = head.find(b"\n")  # split the first line only, not the rest of its block
    first_batch = next(line_batches(iter([head if end < 0 else head[: end + 1]])), None)
    return None if first_batch is None else first_batch[1][0].as_py()


def _inspect(file: FileToRead, key_file: str | None) -> tuple[str, str | None, str | None]:
    """(submission_id, header line or None, refusal reason or None) of one file."""
    from caredata_spark.errors import InputRefused

    try:
        if file.encrypted:
            first = _first_line(_blocks(file, key_file))
        else:
            with open(file.path, "rb") as handle:
                first = _first_line(iter([handle.readline(BLOCK_BYTES)]))
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
