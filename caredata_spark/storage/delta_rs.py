"""Genuine Delta tables without the delta-spark JVM connector (no Maven needed).

Executors write Parquet with Spark's own (JVM) writer, in parallel, into a staging folder
inside the table (`_staging/<write id>/`, ignored by every Delta reader because of the
leading underscore). The driver then moves the finished files into the table's Hive-style
layout, takes per-file statistics from the Parquet footers, and commits them all in ONE Delta
transaction with delta-rs (`deltalake`). Until that commit no reader sees any of the files,
so a failed job leaves the table exactly as it was; its staged files are deleted.

Spark's native writer is used rather than a Python Data Source writer because shipping every
row to Python workers over Arrow costs more than the Parquet encoding itself
(`make bench` prints the ratio against plain Parquet).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructField, StructType

from caredata_spark.storage.base import (
    UNSTATED_COLUMNS,
    DeltaStore,
    StorageError,
    TableDetails,
    Txn,
    WriteMode,
    as_nullable,
    empty_frame,
    write_failed,
)

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
STAGING = "_staging"
STRING_STATS_MAX_CHARS = 32  # as delta-spark: longer strings get no min/max here


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), uri.rstrip("/")
    fs, base = pafs.FileSystem.from_uri(uri)
    return fs, base.rstrip("/")


def _stat_safe(value: Any) -> bool:
    """Whether a footer min/max can be stated in the Delta log exactly."""
    if isinstance(value, bool) or isinstance(value, (bytes, dt.datetime)):
        return False
    if isinstance(value, str):
        return len(value) <= STRING_STATS_MAX_CHARS
    if isinstance(value, float):
        return value == value  # not NaN
    return isinstance(value, (int, dt.date))


def file_statistics(metadata: pq.FileMetaData) -> dict[str, Any]:
    """Delta `stats` (numRecords, minValues, maxValues, nullCount) from a Parquet footer.

    A column gets min/max only when every row group states them and they are exact; a
    column whose null count is unknown in any row group gets no nullCount. Readers then
    simply cannot skip on that column, which is always correct. `UNSTATED_COLUMNS` get no
    statistics at all, as the table property from `stats_properties` tells delta-spark.
    """
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    for i, name in enumerate(names):
        if "." in name or name in UNSTATED_COLUMNS:
            continue  # nested leaf (no top-level statistic) or a column naming records
        column_stats = [metadata.row_group(g).column(i).statistics for g in range(metadata.num_row_groups)]
        if column_stats and all(s is not None and s.has_null_count for s in column_stats):
            nulls[name] = sum(s.null_count for s in column_stats)
        with_values = [s for s in column_stats if s is not None and s.has_min_max]
        if not with_values or len(with_values) != len(column_stats):
            continue
        low, high = min(s.min for s in with_values), max(s.max for s in with_values)
        if _stat_safe(low) and _stat_safe(high):
            lows[name] = low.isoformat() if isinstance(low, dt.date) else low
            highs[name] = high.isoformat() if isinstance(high, dt.date) else high
    return {"numRecords": metadata.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls}


def _partition_values(relative_dir: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for segment in filter(None, relative_dir.split("/")):
        name, _, raw = segment.partition("=")
        values[name] = None if raw == HIVE_NULL else unquote(raw)
    missing = [c for c in partition_by if c not in values]
    if missing:
        raise StorageError(f"staged file outside partition layout (no {', '.join(missing)})")
    return values


class _StagedWrite:
    """Files of one write: staged by Spark, moved into the table, then committed or removed."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, self.base = _filesystem(root)
        self.write_id = uuid.uuid4().hex[:16]
        self.staging = f"{self.base}/{STAGING}/{self.write_id}"
        self.moved: list[str] = []

    def prepare(self) -> None:
        """Create the staging root on the driver first: an unwritable warehouse is then one
        clear error here, not a failed Spark job logging a stack trace per task."""
        try:
            self.fs.create_dir(f"{self.base}/{STAGING}", recursive=True)
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else type(err).__name__
            raise StorageError(f"cannot write Delta table {self.root}: {reason}") from err

    @property
    def staging_uri(self) -> str:
        return f"{self.root.rstrip('/')}/{STAGING}/{self.write_id}"

    def publish(self, partition_by: Sequence[str], skip_empty: bool = False) -> list[dict[str, Any]]:
        """Move staged Parquet files into the table layout; return their Delta add actions.

        `skip_empty` drops files without rows (a rewrite that deleted a whole file)."""
        listing = self.fs.get_file_info(pafs.FileSelector(self.staging, recursive=True))
        adds = []
        for info in listing:
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            relative = info.path[len(self.staging) + 1 :]
            if "/_" in f"/{relative}" or "/." in f"/{relative}":
                continue  # committer leftovers (_temporary, .crc)
            relative_dir = relative.rsplit("/", 1)[0] if "/" in relative else ""
            partition_values = _partition_values(relative_dir, partition_by)
            statistics = file_statistics(pq.read_metadata(info.path, filesystem=self.fs))
            if skip_empty and statistics["numRecords"] == 0:
                continue  # left in staging, deleted with it
            target = f"{self.base}/{relative}"
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            self.fs.move(info.path, target)
            self.moved.append(target)
            adds.append(
                {
                    "path": quote(relative, safe="/="),
                    "size": info.size,
                    "partition_values": partition_values,
                    "modification_time": int(time.time() * 1000),
                    "data_change": True,
                    "stats": json.dumps(statistics),
                }
            )
        return adds

    def discard_published(self) -> None:
        for path in self.moved:
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass

    def remove_staging(self) -> None:
        try:
            self.fs.delete_dir(self.staging)
        except (FileNotFoundError, OSError):
            pass


def commit_files(
    root: str,
    schema: StructType,
    adds: list[dict[str, Any]],
    mode: WriteMode,
    partition_by: Sequence[str],
    replace: Mapping[str, Sequence[str]] | None,
    txn: Txn | None,
    table_properties: Mapping[str, str],
) -> bool:
    """Commit add actions in one Delta transaction; False if `txn` was committed meanwhile.
    `table_properties` become the table's properties if this commit creates it."""
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import AddAction, Transaction, create_table_with_add_actions

    if replace is not None:
        outside = [
            a["partition_values"]
            for a in adds
            if any(a["partition_values"].get(c) not in vs for c, vs in replace.items())
        ]
        if outside:
            raise StorageError(
                f"overwrite of partitions {dict(replace)} in table {root}: the data holds rows "
                f"of other partitions, e.g. {outside[0]}"
            )
    actions = [AddAction(**a) for a in adds]
    transactions = [Transaction(txn.app_id, txn.version)] if txn else []
    properties = CommitProperties(app_transactions=transactions)
    delta_schema = Schema.from_arrow(to_arrow_schema(schema, timezone="UTC"))
    if not DeltaTable.is_deltatable(root):
        create_table_with_add_actions(
            root,
            delta_schema,
            actions,
            mode="error",
            partition_by=list(partition_by) or None,
            configuration=dict(table_properties),
            commit_properties=properties,
        )
        return True
    table = DeltaTable(root)
    if txn is not None:
        done = table.transaction_version(txn.app_id)
        if done is not None and done >= txn.version:
            return False
    table.create_write_transaction(
        actions,
        mode=mode,
        schema=delta_schema,
        partition_by=list(partition_by) or None,
        partition_filters=[(c, "in", list(vs)) for c, vs in replace.items()] if replace else None,
        commit_properties=properties,
    )
    return True


def _files(table: Any) -> list[str]:
    """A version's data files as decoded paths (the log stores them URI-encoded)."""
    return [unquote(uri) for uri in table.file_uris()]


class DeltaRsStore(DeltaStore):
    name = "delta-rs"

    def __init__(self, spark: SparkSession) -> None:
        super().__init__(spark)
        # Delta stores timestamps as microseconds; Spark's default INT96 is not allowed
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    def _table(self, path: str, version: int | None = None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(path, version=version)
        except TableNotFoundError:
            raise StorageError(f"no Delta table at {path}") from None
        except Exception as err:
            raise StorageError(f"cannot open Delta table {path} ({type(err).__name__})") from err

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def version(self, path: str) -> int | None:
        return self._table(path).version() if self.exists(path) else None

    def schema(self, path: str) -> StructType:
        return _spark_schema(self._table(path))

    def txn_version(self, path: str, app_id: str) -> int | None:
        return self._table(path).transaction_version(app_id) if self.exists(path) else None

    def read(self, path: str, version: int | None = None) -> DataFrame:
        table = self._table(path, version)
        return self._frame(path, table, _files(table))

    def _data_files(self, path: str, version: int) -> list[str]:
        return _files(self._table(path, version))

    def _read_files(self, path: str, version: int, files: Sequence[str]) -> DataFrame:
        return self._frame(path, self._table(path, version), files)

    def _write(
        self,
        df: DataFrame,
        path: str,
        mode: WriteMode,
        partition_by: Sequence[str],
        replace: Mapping[str, Sequence[str]] | None,
        txn: Txn | None,
        properties: Mapping[str, str],
    ) -> None:
        def commit(adds: list[dict[str, Any]]) -> bool:
            return commit_files(path, as_nullable(df.schema), adds, mode, partition_by, replace, txn, properties)

        self._staged(df, path, partition_by, commit)

    def _staged(
        self,
        df: DataFrame,
        path: str,
        partition_by: Sequence[str],
        commit: Callable[[list[dict[str, Any]]], bool],
        skip_empty: bool = False,
    ) -> None:
        """Spark writes `df` into staging, the files move into the table, `commit` commits
        their add actions; until it returns True nothing is visible and on failure the files
        are deleted."""
        staged = _StagedWrite(path)
        staged.prepare()
        committed = False
        try:
            df.write.mode("errorifexists").partitionBy(*partition_by).parquet(staged.staging_uri)
            committed = commit(staged.publish(partition_by, skip_empty=skip_empty))
        except StorageError:
            raise
        except Exception as err:
            raise StorageError(write_failed(path, err)) from err
        finally:
            if not committed:
                staged.discard_published()
            staged.remove_staging()

    def _delete_keys(self, path: str, keys: DataFrame) -> int:
        """Rewrite only the files holding a key, without its rows; one remove+add commit.

        Finding the files scans the key columns of the latest version (Parquet reads those
        columns only) in one semi join with the keys: a shuffle that scales with the table's
        key column, and AQE broadcasts the keys when they are few, as they are per run.
        The files found are few; their names are collected, never their rows.
        """
        table = self._table(path)  # its version is the read version of the commit below
        files = _live_files(table)
        if not files:
            return 0
        columns = keys.columns
        holding = (
            self._frame(path, table, list(files.values()))
            .select(*columns, F.col("_metadata.file_path").alias("file"))
            .join(keys, on=columns, how="left_semi")
            .select("file")
            .distinct()
            .collect()  # one row per data file holding a key
        )
        partition_by = list(table.metadata().partition_columns)
        depth = len(partition_by) + 1  # partition folders and file name
        by_tail = {_tail(_on_disk(relative), depth): relative for relative in files}
        affected = sorted({by_tail[_tail(unquote(r["file"]), depth)] for r in holding})
        if not affected:
            return 0
        rows = self._frame(path, table, [files[r] for r in affected])
        before = rows.count()  # Parquet footers only
        kept_rows = 0

        def commit(adds: list[dict[str, Any]]) -> bool:
            nonlocal kept_rows
            kept_rows = sum(json.loads(a["stats"])["numRecords"] for a in adds)
            commit_rewrite(table, affected, adds, partition_by)
            return True

        # left anti join against the few keys, only over the affected files' rows
        kept = rows.join(keys, on=columns, how="left_anti").select(*rows.columns)
        self._staged(kept, path, partition_by, commit, skip_empty=True)
        return before - kept_rows

    def _frame(self, path: str, table: Any, files: Sequence[str]) -> DataFrame:
        """The table's rows from some of its data files (decoded paths), in its column order.

        Hive-style directories under the (decoded) table root let Spark's own partition
        discovery restore the partition columns.
        """
        schema = _spark_schema(table)
        if not files:
            return empty_frame(self.spark, schema)
        try:
            base = unquote(table.table_uri)
            frame = self.spark.read.schema(schema).option("basePath", base).parquet(*files)
        except AnalysisException as err:
            if err.getCondition() == "PATH_NOT_FOUND":
                raise StorageError(
                    f"Delta table {path} is damaged: a data file its log names is missing"
                ) from err
            raise StorageError(f"cannot read Delta table {path} ({type(err).__name__})") from err
        return frame.select(*schema.fieldNames())

    def details(self, path: str) -> TableDetails:
        table = self._table(path)  # one read of the log for all three
        metadata = table.metadata()
        schema = _spark_schema(table)
        return TableDetails(schema, dict(metadata.configuration), tuple(metadata.partition_columns))

    def _set_properties(self, path: str, properties: Mapping[str, str]) -> None:
        try:
            self._table(path).alter.set_table_properties(dict(properties))
        except Exception as err:
            raise StorageError(f"cannot set properties of Delta table {path} ({type(err).__name__})") from err

    def _add_columns(self, path: str, fields: Sequence[StructField]) -> None:
        from deltalake import Schema

        delta_fields = Schema.from_arrow(to_arrow_schema(StructType(list(fields)), timezone="UTC")).fields
        try:
            self._table(path).alter.add_columns(delta_fields)
        except Exception as err:
            raise StorageError(f"cannot add columns to Delta table {path} ({type(err).__name__})") from err

    def _vacuum(self, path: str, retention_hours: int) -> int | None:
        deleted = self._table(path).vacuum(
            retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False
        )
        return len(deleted)

    def compact(self, path: str) -> tuple[int, int]:
        """delta-rs bin-packs the files on the driver, streaming them a bin at a time; the
        files it writes keep the table's statistics columns (`UNSTATED_COLUMNS` left out)."""
        try:
            metrics = self._table(path).optimize.compact()
        except Exception as err:
            raise StorageError(write_failed(path, err)) from err
        return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])

    def tidy_log(self, path: str) -> None:
        table = self._table(path)
        table.create_checkpoint()
        table.cleanup_metadata()

    def remove_abandoned_writes(self, path: str, older_than_hours: int) -> int:
        """Staging folders (`_staging/<write id>`) in which nothing changed for
        `older_than_hours`: a killed job never reached its own clean-up."""
        fs, base = _filesystem(path)
        cutoff = time.time() - older_than_hours * 3600
        folders = fs.get_file_info(pafs.FileSelector(f"{base}/{STAGING}", allow_not_found=True))
        abandoned = [
            folder.path
            for folder in folders
            if folder.type == pafs.FileType.Directory and _last_change(fs, folder) < cutoff
        ]
        for folder in abandoned:
            fs.delete_dir(folder)
        return len(abandoned)


def _last_change(fs: pafs.FileSystem, folder: pafs.FileInfo) -> float:
    """Newest modification time in seconds of a folder and everything under it."""
    inside = fs.get_file_info(pafs.FileSelector(folder.path, recursive=True))
    return max(info.mtime.timestamp() for info in [folder, *inside] if info.mtime is not None)


def _spark_schema(table: Any) -> StructType:
    """A delta-rs table's schema as Spark's."""
    return from_arrow_schema(pa.schema(table.schema().to_arrow()))


def _tail(path: str, segments: int) -> str:
    return "/".join(path.split("/")[-segments:])


def _live_files(table: Any) -> dict[str, str]:
    """Data files of the table's version: log path (as the log spells it) -> readable path."""
    root = unquote(table.table_uri).rstrip("/")
    logged = table.get_add_actions(flatten=True).column("path").to_pylist()
    return {relative: f"{root}/{_on_disk(relative)}" for relative in logged}


def _on_disk(logged: str) -> str:
    """A data file's path under the table root as this engine lays it out: the log holds
    the URI-encoded form of the (already encoded) path `publish` gave delta-rs."""
    return unquote(unquote(logged))


def commit_rewrite(table: Any, removed: list[str], adds: list[dict[str, Any]], partition_by: list[str]) -> None:
    """Remove the rewritten files and add their replacements in ONE Delta transaction,
    against the version they were read from (a concurrent change to them is a conflict)."""
    from deltalake.transaction import AddAction, RemoveAction

    now = int(time.time() * 1000)
    removes = [
        RemoveAction(
            path=unquote(relative),  # the form `publish` gave when adding it
            data_change=True,
            deletion_timestamp=now,
            partition_values=_partition_values(_on_disk(relative).rpartition("/")[0], partition_by),
        )
        for relative in removed
    ]
    table.create_write_transaction(
        [*removes, *[AddAction(**a) for a in adds]],
        mode="append",
        schema=table.schema(),
        partition_by=partition_by or None,
    )
