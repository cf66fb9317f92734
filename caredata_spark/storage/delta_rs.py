"""Genuine Delta tables without the delta-spark JVM connector (no Maven needed).

Executors write Parquet files in parallel through Spark's Python Data Source API
(`DataSourceArrowWriter.write` per task returns the files it wrote, with Delta statistics);
the driver commits all of them in ONE Delta transaction with delta-rs (`deltalake`) in
`commit`, or deletes them in `abort`. Until that commit no reader sees any of the files,
so a failed job leaves the table exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceArrowWriter, WriterCommitMessage
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from caredata_spark.storage.base import (
    DeltaStore,
    StorageError,
    Txn,
    WriteMode,
    as_nullable,
    empty_frame,
)

FORMAT = "caredata_delta_rs"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MAX_ROWS_PER_FILE = 4_000_000
STRING_STATS_MAX_CHARS = 32  # as delta-spark: longer strings get no min/max here
_HIVE_UNSAFE = set('"#%\'*/:=?\\\x7f{[]^') | {chr(c) for c in range(0x20)}


def _escape_hive(value: str) -> str:
    """Escape a partition value for a `col=value` directory name, as Hive and Spark do."""
    return "".join(f"%{ord(ch):02X}" if ch in _HIVE_UNSAFE else ch for ch in value)


def _partition_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    return pafs.FileSystem.from_uri(uri)


def _stat_value(value: Any) -> Any:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value


@dataclass
class _ColumnStats:
    nulls: int = 0
    min: Any = None
    max: Any = None
    usable: bool = True  # False once min/max cannot be stated safely for this file

    def update(self, column: pa.ChunkedArray | pa.Array) -> None:
        self.nulls += column.null_count
        if not self.usable or column.null_count == len(column):
            return
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if pc.max(pc.utf8_length(column)).as_py() > STRING_STATS_MAX_CHARS:
                self.usable = False
                return
        elif pa.types.is_floating(kind):
            if pc.any(pc.is_nan(column)).as_py():
                self.usable = False
                return
        elif not (pa.types.is_integer(kind) or pa.types.is_date(kind)):
            self.usable = False  # timestamps, decimals, binary, booleans, nested: nulls only
            return
        low_high = pc.min_max(column)
        low, high = low_high["min"].as_py(), low_high["max"].as_py()
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)


@dataclass
class _OpenFile:
    relative_path: str
    partition_values: dict[str, str | None]
    writer: pq.ParquetWriter
    rows: int = 0
    stats: dict[str, _ColumnStats] = field(default_factory=dict)


class _TaskFiles:
    """The Parquet files one task writes: one open file per partition, rolled by row count."""

    def __init__(
        self, root: str, write_id: str, schema: pa.Schema, partition_by: Sequence[str], max_rows: int
    ) -> None:
        self.fs, self.base = _filesystem(root)
        self.write_id = write_id
        self.schema = schema
        self.partition_by = list(partition_by)
        self.data_schema = pa.schema([f for f in schema if f.name not in self.partition_by])
        self.max_rows = max_rows
        self.open: dict[tuple[str | None, ...], _OpenFile] = {}
        self.done: list[dict[str, Any]] = []
        self.written: list[str] = []

    def add(self, table: pa.Table) -> None:
        table = table.cast(self.schema)
        if not self.partition_by:
            self._append((), table)
            return
        keys = table.select(self.partition_by).group_by(self.partition_by).aggregate([])
        for key in keys.to_pylist():
            mask = None
            for name in self.partition_by:
                value = key[name]
                test = pc.is_null(table[name]) if value is None else pc.equal(table[name], value)
                mask = test if mask is None else pc.and_(mask, test)
            part = table.filter(mask).drop_columns(self.partition_by)
            self._append(tuple(_partition_string(key[n]) for n in self.partition_by), part)

    def _append(self, key: tuple[str | None, ...], table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        current = self.open.get(key) or self._start(key)
        current.writer.write_table(table)
        current.rows += table.num_rows
        for name in table.column_names:
            current.stats.setdefault(name, _ColumnStats()).update(table[name])
        if current.rows >= self.max_rows:
            self._finish(key)

    def _start(self, key: tuple[str | None, ...]) -> _OpenFile:
        dirs = [
            f"{name}={HIVE_NULL if value is None else _escape_hive(value)}"
            for name, value in zip(self.partition_by, key)
        ]
        relative = "/".join([*dirs, f"part-{self.write_id}-{uuid.uuid4().hex}.snappy.parquet"])
        full = f"{self.base.rstrip('/')}/{relative}"
        self.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        self.written.append(full)
        writer = pq.ParquetWriter(
            full, self.data_schema, filesystem=self.fs, compression="snappy"
        )
        opened = _OpenFile(relative, dict(zip(self.partition_by, key)), writer)
        self.open[key] = opened
        return opened

    def _finish(self, key: tuple[str | None, ...]) -> None:
        current = self.open.pop(key)
        current.writer.close()
        full = f"{self.base.rstrip('/')}/{current.relative_path}"
        stats = {
            "numRecords": current.rows,
            "minValues": {n: _stat_value(s.min) for n, s in current.stats.items() if s.usable and s.min is not None},
            "maxValues": {n: _stat_value(s.max) for n, s in current.stats.items() if s.usable and s.max is not None},
            "nullCount": {n: s.nulls for n, s in current.stats.items()},
        }
        self.done.append(
            {
                "path": quote(current.relative_path, safe="/="),
                "size": self.fs.get_file_info(full).size,
                "partition_values": current.partition_values,
                "modification_time": int(time.time() * 1000),
                "data_change": True,
                "stats": json.dumps(stats),
            }
        )

    def close(self) -> list[dict[str, Any]]:
        for key in list(self.open):
            self._finish(key)
        return self.done

    def discard(self) -> None:
        for opened in self.open.values():
            try:
                opened.writer.close()
            except Exception:  # the file is deleted next; a broken writer must not hide the cause
                pass
        _delete(self.fs, self.written)


def _delete(fs: pafs.FileSystem, paths: Sequence[str]) -> None:
    for path in paths:
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


@dataclass
class FilesWritten(WriterCommitMessage):
    adds: list[dict[str, Any]]


class DeltaRsWriter(DataSourceArrowWriter):
    def __init__(self, options: Mapping[str, str], schema: StructType) -> None:
        self.root = options["path"]
        self.mode = options.get("mode", "append")
        self.partition_by: list[str] = json.loads(options.get("partition_by", "[]"))
        self.replace: dict[str, list[str]] | None = json.loads(options.get("replace", "null"))
        self.app_id = options.get("txn_app_id")
        self.txn_version = int(options["txn_version"]) if "txn_version" in options else None
        self.max_rows = int(options.get("max_rows_per_file", MAX_ROWS_PER_FILE))
        self.write_id = uuid.uuid4().hex[:12]  # names this job's files, for abort
        self.spark_schema = as_nullable(schema)
        self.arrow_schema = to_arrow_schema(self.spark_schema, timezone="UTC")

    def write(self, iterator: Iterator[pa.RecordBatch]) -> FilesWritten:
        files = _TaskFiles(
            self.root, self.write_id, self.arrow_schema, self.partition_by, self.max_rows
        )
        try:
            for batch in iterator:
                files.add(pa.Table.from_batches([batch]))
            return FilesWritten(files.close())
        except BaseException:
            files.discard()
            raise

    def abort(self, messages: list[FilesWritten | None]) -> None:  # type: ignore[override]
        """Delete every file of this job: reported by finished tasks or left by killed ones."""
        fs, base = _filesystem(self.root)
        reported = [f"{base.rstrip('/')}/{unquote(a['path'])}" for m in messages if m for a in m.adds]
        try:
            listing = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError:
            listing = []
        marker = f"part-{self.write_id}-"
        stray = [f.path for f in listing if f.base_name.startswith(marker)]
        _delete(fs, sorted(set(reported) | set(stray)))

    def commit(self, messages: list[FilesWritten | None]) -> None:  # type: ignore[override]
        try:
            committed = self._commit([a for m in messages if m for a in m.adds])
        except BaseException:
            self.abort(messages)
            raise
        if not committed:
            self.abort(messages)

    def _commit(self, adds: list[dict[str, Any]]) -> bool:
        """Commit the files; False when a concurrent retry already committed this txn."""
        from deltalake import CommitProperties, DeltaTable, Schema
        from deltalake.transaction import AddAction, Transaction, create_table_with_add_actions

        actions = [AddAction(**a) for a in adds]
        transactions = []
        if self.app_id is not None and self.txn_version is not None:
            transactions = [Transaction(self.app_id, self.txn_version)]
        properties = CommitProperties(app_transactions=transactions)
        schema = Schema.from_arrow(self.arrow_schema)
        if self.replace is not None:
            outside = [
                a["partition_values"]
                for a in adds
                if any(a["partition_values"].get(c) not in vs for c, vs in self.replace.items())
            ]
            if outside:
                raise StorageError(
                    f"overwrite of partitions {self.replace} in table {self.root}: data holds "
                    f"rows of other partitions, e.g. {outside[0]}"
                )
        if not DeltaTable.is_deltatable(self.root):
            create_table_with_add_actions(
                self.root,
                schema,
                actions,
                mode="error",
                partition_by=self.partition_by or None,
                commit_properties=properties,
            )
            return True
        table = DeltaTable(self.root)
        if transactions:
            done = table.transaction_version(self.app_id or "")
            if done is not None and done >= (self.txn_version or 0):
                return False
        filters = None
        if self.replace is not None:
            filters = [(c, "in", list(vs)) for c, vs in self.replace.items()]
        table.create_write_transaction(
            actions,
            mode=self.mode,
            schema=schema,
            partition_by=self.partition_by or None,
            partition_filters=filters,
            commit_properties=properties,
        )
        return True


class DeltaRsDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return FORMAT

    def writer(self, schema: StructType, overwrite: bool) -> DeltaRsWriter:
        return DeltaRsWriter(self.options, schema)


class DeltaRsStore(DeltaStore):
    name = "delta-rs"

    def __init__(self, spark: SparkSession) -> None:
        super().__init__(spark)
        spark.dataSource.register(DeltaRsDataSource)

    def _table(self, path: str, version: int | None = None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(path, version=version)
        except TableNotFoundError:
            raise StorageError(f"no Delta table at {path}") from None
        except Exception as err:
            raise StorageError(f"cannot open Delta table {path}: {err}") from None

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def version(self, path: str) -> int | None:
        return self._table(path).version() if self.exists(path) else None

    def schema(self, path: str) -> StructType:
        return from_arrow_schema(pa.schema(self._table(path).schema().to_arrow()))

    def txn_version(self, path: str, app_id: str) -> int | None:
        return self._table(path).transaction_version(app_id) if self.exists(path) else None

    def read(self, path: str, version: int | None = None) -> DataFrame:
        table = self._table(path, version)
        schema = from_arrow_schema(pa.schema(table.schema().to_arrow()))
        files = [unquote(uri) for uri in table.file_uris()]  # the log stores URI-encoded paths
        if not files:
            return empty_frame(self.spark, schema)
        # Hive-style directories let Spark's own partition discovery restore partition columns
        frame = self.spark.read.schema(schema).option("basePath", table.table_uri).parquet(*files)
        return frame.select(*schema.fieldNames())

    def _write(
        self,
        df: DataFrame,
        path: str,
        mode: WriteMode,
        partition_by: Sequence[str],
        replace: Mapping[str, Sequence[str]] | None,
        txn: Txn | None,
    ) -> None:
        writer = (
            df.write.format(FORMAT)
            .mode("append")
            .option("path", path)
            .option("mode", mode)
            .option("partition_by", json.dumps(list(partition_by)))
        )
        if replace is not None:
            writer = writer.option("replace", json.dumps({c: list(v) for c, v in replace.items()}))
        if txn is not None:
            writer = writer.option("txn_app_id", txn.app_id).option("txn_version", str(txn.version))
        try:
            writer.save()
        except Exception as err:
            raise StorageError(f"write to Delta table {path} failed: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
