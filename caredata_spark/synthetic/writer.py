"""Landing-zone files with deterministic names and bytes, written by executors.

Spark's own CSV writer names files `part-<uuid>` and splits them by partition, so the
generator writes files itself:

1. rows are hash-partitioned by submitter (each submitter's rows land in one task) and
   sorted by submitter and a per-row unique order, so a file's content does not depend on
   how many partitions or executors there are;
2. Spark builds each CSV line (RFC 4180 quoting by `to_csv`), applies the structural dirt
   (an extra or a missing field, the cut last line of some files) and numbers the rows;
3. `mapInArrow` streams each task's sorted rows into one file per submitter, written to a
   temporary name and renamed when complete (a retried or speculative task rewrites the
   same bytes), and passes the truth columns on, so landing files and ground truth come
   out of one pass over the data.

Files go to a staging folder first; `publish` moves them into the landing zone only after
the ground truth is committed.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from caredata_spark.contract import DATASETS
from caredata_spark.synthetic.activity import Plan, Rows
from caredata_spark.synthetic.settings import SynthSettings

EXTRA_COLUMN = "EXTRACT_DATE"  # the column some submitters add of their own
EXTRA_FIELD = "Y"  # what a dirty row carries in a field its header does not have
CSV_OPTIONS = {"escape": '"', "emptyValue": "", "nullValue": ""}  # RFC 4180, empty = missing

TRUTH_SCHEMA = StructType(
    [
        StructField("dataset", StringType()),
        StructField("submitter", StringType()),
        StructField("file", StringType()),
        StructField("row_number", IntegerType()),
        StructField("record_key", StringType()),
        StructField("person_id", LongType()),
        StructField("noise", ArrayType(StringType())),
        StructField("dirty", StringType()),
        StructField("type1_objection", BooleanType()),
        StructField("type2_objection", BooleanType()),
    ]
)
_OUTPUT = TRUTH_SCHEMA.fieldNames()
_TRUTH_FIELDS = [c for c in _OUTPUT if c not in ("dataset", "submitter", "file", "row_number")]


@dataclass(frozen=True)
class FileFormat:
    """How one dataset's files are written; sent to the executors."""

    dataset: str
    kind: str  # csv or parquet
    orders: tuple[tuple[str, ...], ...]  # column order of each file variant
    row_group: int
    public_key: str | None = None  # transport public key (text): write `.csv.enc`

    @property
    def extension(self) -> str:
        return "csv.enc" if self.public_key else self.kind


def file_variants(dataset: str, seed: int) -> tuple[tuple[str, ...], ...]:
    """Column orders: the contract's; a submitter's own (seeded); the contract's plus a
    column of the submitter's own. Column names never change (CONTRACT.md)."""
    columns = DATASETS[dataset].columns
    shuffled = list(columns)
    random.Random(f"{seed}/{dataset}").shuffle(shuffled)
    return (tuple(columns), tuple(shuffled), (*columns, EXTRA_COLUMN))


def period_label(settings: SynthSettings) -> str:
    return f"{settings.start:%Y%m%d}-{settings.end:%Y%m%d}"


def _csv(columns: Sequence[str], extract_date: str) -> Column:
    values = [F.lit(extract_date).alias(c) if c == EXTRA_COLUMN else F.col(c) for c in columns]
    return F.to_csv(F.struct(*values), CSV_OPTIONS)


def prepare(rows: Rows, plan: Plan, fmt: FileFormat) -> DataFrame:
    """Rows in file order, one submitter per task, with `file`, `row_number` and, for CSV,
    each finished line `_line`; the truth columns ride along.

    CSV lines are built before the shuffle, so one string per row crosses it instead of
    every column; per-file constants (`file`, `dataset`) are added after it.
    """
    settings, draws, files = plan.settings, plan.draws, plan.settings.files
    submitter = F.col("submitter")
    u = draws.uniform("file/variant", F.lit(fmt.dataset), submitter)
    variant = F.when(u < files.shuffled_columns, 1).when(u < files.shuffled_columns + files.extra_column, 2).otherwise(0)
    extract_date = f"{settings.end:%Y-%m-%d}"
    carried = [*_TRUTH_FIELDS, "submitter", *rows.order, "_variant"]
    frame = rows.frame.withColumn("_variant", variant)
    if fmt.kind == "parquet":
        frame = frame.withColumn(EXTRA_COLUMN, F.lit(extract_date)).select(
            *carried, *(c for c in (*DATASETS[fmt.dataset].columns, EXTRA_COLUMN) if c not in carried)
        )
    else:
        frame = frame.withColumn("_line", _csv_line(fmt.orders, extract_date)).select(*carried, "_line")
    if not rows.clustered:
        frame = frame.repartition(plan.partitions(fmt.dataset), "submitter")
    in_file = Window.partitionBy("submitter").orderBy(*rows.order)
    frame = (
        frame.withColumn("row_number", F.row_number().over(in_file))
        .withColumn("_last", F.lead("record_key").over(in_file).isNull())
        .withColumn("dataset", F.lit(fmt.dataset))
        .withColumn(
            "file",
            F.concat(
                F.lit(f"{fmt.dataset}/"), submitter, F.lit(f"/{fmt.dataset}_"), submitter,
                F.lit(f"_{period_label(settings)}.{fmt.extension}"),
            ),
        )
    )
    if fmt.kind == "parquet":
        return frame.select(*_OUTPUT, "_variant", *DATASETS[fmt.dataset].columns, EXTRA_COLUMN)
    line = F.col("_line")
    cut = F.col("_last") & (draws.uniform("file/truncated", F.lit(fmt.dataset), submitter) < files.truncated)
    return (
        frame.withColumn("_cut", cut)
        .withColumn("dirty", F.when(F.col("_cut"), F.lit("truncated")).otherwise(F.col("dirty")))
        .withColumn(
            "_line",
            F.when(F.col("_cut"), F.substr(line, F.lit(1), F.floor(F.length(line) / 2).cast("int")))
            .otherwise(F.concat(line, F.lit("\n"))),
        )
        .select(*_OUTPUT, "_variant", "_line")
    )


def _csv_line(orders: Sequence[Sequence[str]], extract_date: str) -> Column:
    """The row as a CSV line in its file's column order, with the row's structural dirt."""
    v0, v1, v2 = orders
    variant, dirty = F.col("_variant"), F.col("dirty")
    line = (
        F.when(variant == 1, _csv(v1, extract_date))
        .when(variant == 2, _csv(v2, extract_date))
        .otherwise(_csv(v0, extract_date))
    )
    return (
        F.when(dirty == "extra_field", F.concat(line, F.lit("," + EXTRA_FIELD)))
        .when(dirty == "missing_field", F.regexp_replace(line, ",[^,]*$", ""))
        .otherwise(line)
    )


def write(frame: DataFrame, staging: str, fmt: FileFormat) -> DataFrame:
    """Write the prepared rows' files under `staging`; the result is the truth rows."""
    return frame.mapInArrow(LandingWriter(staging, fmt), TRUTH_SCHEMA)


def _runs(values: pa.Array) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in a sorted column."""
    if len(values) == 0:
        return []
    codes = np.asarray(pc.dictionary_encode(values).indices)
    cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(values)]
    return list(zip(bounds, bounds[1:]))


def _text_bytes(column: pa.Array) -> memoryview:
    """The concatenated UTF-8 bytes of a string column without nulls, without copying."""
    offsets_type = np.int64 if pa.types.is_large_string(column.type) else np.int32
    _, offsets_buffer, data = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offsets_type)[column.offset : column.offset + len(column) + 1]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]


@dataclass
class _OpenFile:
    final: Path
    temporary: Path
    fmt: FileFormat
    order: tuple[str, ...]
    handle: object = None
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(c, pa.string()) for c in self.order])

    def open(self) -> None:
        self.temporary.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt.kind == "csv":
            self.handle = open(self.temporary, "wb")
            self.handle.write((",".join(self.order) + "\n").encode("utf-8"))
        else:
            self.handle = pq.ParquetWriter(self.temporary, self.schema, compression="snappy")

    def write(self, batch: pa.RecordBatch) -> None:
        if self.fmt.kind == "csv":
            self.handle.write(_text_bytes(batch.column("_line")))
            return
        self.pending.append(batch.select(list(self.order)))
        self.pending_rows += batch.num_rows
        if self.pending_rows >= self.fmt.row_group:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write whole row groups (and, at the end, the rest): the same bytes whatever the
        Arrow batch boundaries were."""
        if not self.pending:
            return
        # Spark marks some columns non-nullable; the file's schema says every field may be empty.
        table = pa.Table.from_batches(self.pending).cast(self.schema)
        size = self.fmt.row_group
        full = table.num_rows - table.num_rows % size
        cut = table.num_rows if final else full
        for start in range(0, cut, size):
            self.handle.write_table(table.slice(start, min(size, cut - start)), row_group_size=size)
        rest = table.slice(cut)
        self.pending = rest.to_batches() if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self) -> None:
        if self.fmt.kind == "parquet":
            self._flush(final=True)
        self.handle.close()
        if self.fmt.public_key:
            from caredata_spark.envelope import encrypt_file
            from caredata_spark.keys import TransportPublicKey

            recipient = TransportPublicKey.from_text(self.fmt.public_key, "transport public key")
            encrypt_file(self.temporary, self.final, recipient)
            self.temporary.unlink()
        else:
            os.replace(self.temporary, self.final)

    def discard(self) -> None:
        try:
            if self.handle is not None:
                self.handle.close()
        finally:
            self.temporary.unlink(missing_ok=True)


class LandingWriter:
    """`mapInArrow` function: one file per run of `file` in a task's sorted rows."""

    def __init__(self, staging: str, fmt: FileFormat) -> None:
        self.staging = Path(staging)
        self.fmt = fmt

    def _open(self, relative: str, variant: int) -> _OpenFile:
        final = self.staging / relative
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        opened = _OpenFile(final, temporary, self.fmt, self.fmt.orders[variant])
        opened.open()
        return opened

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current: _OpenFile | None = None
        try:
            for batch in batches:
                files = batch.column("file")
                for start, stop in _runs(files):
                    relative = files[start].as_py()
                    if current is None or current.final != self.staging / relative:
                        if current is not None:
                            current.close()
                        current = self._open(relative, batch.column("_variant")[start].as_py())
                    current.write(batch.slice(start, stop - start))
                yield batch.select(_OUTPUT)
            if current is not None:
                current.close()
                current = None
        finally:
            if current is not None:
                current.discard()


def staging_folder(landing: str) -> str:
    """A fresh folder inside the landing zone; its `_` prefix keeps readers out of it."""
    return str(Path(landing) / f"_synth_staging_{uuid.uuid4().hex}")

