"""The storage interface every job writes through, whichever Delta engine is underneath."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    DateType,
    NumericType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from caredata_spark.errors import CaredataError
from caredata_spark.observability import get_logger, log_event

WriteMode = Literal["append", "overwrite"]
LOG = get_logger("storage")


class StorageError(CaredataError, RuntimeError):
    """A table cannot be read or written; the message names the table."""


class SchemaMismatchError(StorageError):
    """Data does not fit the table's schema; the message names the columns."""


# Columns whose values name a patient's records (a GP key is practice code + the practice's
# patient id): never file statistics in the Delta log. The log outlives vacuum (old commits
# keep their add actions), so an erased key that was some file's min or max would stay there.
UNSTATED_COLUMNS = frozenset({"record_key"})
STATS_COLUMNS_PROPERTY = "delta.dataSkippingStatsColumns"
# the types delta-spark can skip on; it refuses the property if it names any other column
SKIPPING_TYPES = (NumericType, DateType, TimestampType, TimestampNTZType, StringType)


def stats_properties(schema: StructType, partition_by: Sequence[str]) -> dict[str, str]:
    """The table property naming the columns both engines may keep file statistics for
    (none when no column is eligible: then no column needs leaving out either)."""
    stated = [
        field.name
        for field in schema.fields
        if isinstance(field.dataType, SKIPPING_TYPES)
        and field.name not in UNSTATED_COLUMNS
        and field.name not in partition_by
    ]
    return {STATS_COLUMNS_PROPERTY: ",".join(stated)} if stated else {}


# Tables whose every version is evidence (each green table's version a publication
# recorded): no vacuum removes their old files and no log cleanup their old commits unless
# told a retention of over 100 years. A raw `VACUUM` or delta-rs `vacuum()` with its default
# retention deletes nothing, and one given a shorter retention is refused by delta-spark's
# and delta-rs's retention checks; old versions stay readable after the 30-day log cleanup.
ARCHIVE_RETENTION = "interval 36500 days"
FILE_RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
ARCHIVE_PROPERTIES: Mapping[str, str] = {
    FILE_RETENTION_PROPERTY: ARCHIVE_RETENTION,
    "delta.logRetentionDuration": ARCHIVE_RETENTION,
}
_UNIT_HOURS = {
    "week": 168.0,
    "day": 24.0,
    "hour": 1.0,
    "minute": 1 / 60,
    "second": 1 / 3600,
    "millisecond": 1 / 3_600_000,
    "microsecond": 1 / 3_600_000_000,
}


def interval_hours(interval: str) -> float:
    """Hours of a Delta interval property ("interval 7 days", "interval 1 week 12 hours");
    ValueError for anything else (Delta's retentions take no months or years)."""
    words = interval.lower().split()
    if words[:1] == ["interval"]:
        words = words[1:]
    if not words or len(words) % 2:
        raise ValueError(f"not a Delta interval: {interval!r}")
    try:
        return sum(float(n) * _UNIT_HOURS[unit.removesuffix("s")] for n, unit in zip(words[::2], words[1::2]))
    except (KeyError, ValueError):
        raise ValueError(f"not a Delta interval: {interval!r}") from None


@dataclass(frozen=True)
class TableDetails:
    """A table's metadata, fetched together: schema, properties and partition columns
    (one read of the log under delta-rs; delta-spark reads the schema beside `DESCRIBE DETAIL`)."""

    schema: StructType
    properties: Mapping[str, str]
    partition_columns: tuple[str, ...]


@dataclass(frozen=True)
class Txn:
    """A Delta application transaction: (app_id, version) is committed at most once.

    A retried step passes the same pair, so a write that already landed is skipped instead
    of appended twice (Delta protocol `txn` action).
    """

    app_id: str
    version: int


def as_nullable(schema: StructType) -> StructType:
    """Tables store every column as nullable, as Spark's file sources do."""
    return StructType.fromJson(
        {**schema.jsonValue(), "fields": [{**f, "nullable": True} for f in schema.jsonValue()["fields"]]}
    )


def check_schema(table: str, table_schema: StructType, data_schema: StructType) -> None:
    """Refuse data whose columns or types differ from the table's, naming every column."""
    expected = {f.name: f.dataType.simpleString() for f in table_schema.fields}
    actual = {f.name: f.dataType.simpleString() for f in data_schema.fields}
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    changed = [
        f"{c} ({expected[c]} in table, {actual[c]} in data)"
        for c in expected
        if c in actual and expected[c] != actual[c]
    ]
    problems = []
    if missing:
        problems.append("missing columns: " + ", ".join(missing))
    if extra:
        problems.append("unexpected columns: " + ", ".join(extra))
    if changed:
        problems.append("type mismatch: " + "; ".join(changed))
    if problems:
        raise SchemaMismatchError(f"schema mismatch writing table {table}: " + "; ".join(problems))


@contextmanager
def _call_site(spark: SparkSession, label: str) -> Iterator[None]:
    """Name a write's Spark stages after its table in the UI and event log (no data in it),
    so an operator sees which table a slow stage is writing."""
    context = spark.sparkContext
    for key in ("callSite.short", "callSite.long"):
        context.setLocalProperty(key, label)
    try:
        yield
    finally:
        for key in ("callSite.short", "callSite.long"):
            context.setLocalProperty(key, None)  # type: ignore[arg-type]


class DeltaStore(ABC):
    """One Delta Lake interface, two engines (delta-spark connector or delta-rs).

    Paths are table roots (local paths or URIs). Reads return distributed DataFrames.
    """

    name: str

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def version(self, path: str) -> int | None:
        """Latest committed version, or None when there is no table."""

    @abstractmethod
    def read(self, path: str, version: int | None = None) -> DataFrame: ...

    def read_added(self, path: str, since: int | None, until: int) -> DataFrame:
        """Rows of the data files version `until` holds and version `since` did not: what
        the commits after `since` added, for a reader that consumed the table up to `since`
        and must not scan its whole history again (linkage, once a month, on tables that
        grow every day).

        Those files may also hold older rows that a commit rewrote (compaction, a purge), so
        the caller must still tell old rows from new by their content, as linkage does by
        submission. With `since` None, or a version whose log entries are gone (trimmed by
        `tidy_log`), every file of `until` is read: more work, the same answer.
        """
        files = self._data_files(path, until)
        if since is not None:
            try:
                earlier = set(self._data_files(path, since))
            except StorageError:
                log_event(LOG, "storage_read_whole_table", table=path, since=since, until=until)
            else:
                files = [f for f in files if f not in earlier]
        return self._read_files(path, until, files)

    @abstractmethod
    def _data_files(self, path: str, version: int) -> list[str]:
        """The data files of a version, as `_read_files` takes them; StorageError when that
        version cannot be loaded."""

    @abstractmethod
    def _read_files(self, path: str, version: int, files: Sequence[str]) -> DataFrame:
        """The rows of some data files of a version, in the table's schema (none: empty)."""

    @abstractmethod
    def schema(self, path: str) -> StructType: ...

    @abstractmethod
    def txn_version(self, path: str, app_id: str) -> int | None:
        """Highest transaction version committed by `app_id`, or None."""

    @abstractmethod
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
        """Commit `df`; `properties` are the table properties to set if this creates the table."""

    def write(
        self,
        df: DataFrame,
        path: str,
        *,
        mode: WriteMode = "append",
        partition_by: Sequence[str] = (),
        replace: Mapping[str, Sequence[str]] | None = None,
        txn: Txn | None = None,
        properties: Mapping[str, str] | None = None,
        add_columns: bool = False,
    ) -> bool:
        """Commit `df` to the table at `path` in one Delta transaction.

        `replace` (with mode="overwrite") replaces only the partitions whose column values
        are listed, e.g. {"dataset": ["hes_ae"]}. `properties` are Delta table properties
        the table must carry (e.g. `ARCHIVE_PROPERTIES`), as is `stats_properties`: set
        when this write creates the table, and on an existing table that lacks them (made
        before they existed, or by another writer) in a commit before the data's. Returns False
        when `txn` had already been committed, so nothing was written. A failure leaves
        the table as it was. `add_columns` lets `df` bring columns the table lacks (a table
        made by an earlier release of the platform): they are added, nullable, in a commit
        of their own before the data's, and the table's older rows read them as null.
        """
        if mode not in ("append", "overwrite"):
            raise ValueError(f"mode must be append or overwrite, got {mode!r}")
        if replace is not None:
            if mode != "overwrite":
                raise ValueError("replace= needs mode='overwrite'")
            unknown = [c for c in replace if c not in partition_by]
            if unknown:
                raise ValueError(f"replace= names non-partition columns: {', '.join(unknown)}")
        if txn is not None:
            done = self.txn_version(path, txn.app_id)
            if done is not None and done >= txn.version:
                return False
        created: dict[str, str] = {}
        if self.exists(path):
            details = self.details(path)
            existing = details.schema
            new = [f for f in df.schema.fields if f.name not in existing.fieldNames()]
            if add_columns and new:
                self._add_columns(path, [StructField(f.name, f.dataType, nullable=True) for f in new])
                existing = self.schema(path)
            check_schema(path, existing, df.schema)
            df = df.select(*existing.fieldNames())
            if tuple(partition_by) != details.partition_columns:
                raise StorageError(
                    f"write to Delta table {path} refused: the table is partitioned by "
                    f"({', '.join(details.partition_columns)}), the write by ({', '.join(partition_by)})"
                )
            wanted = {**stats_properties(existing, details.partition_columns), **(properties or {})}
            lacking = {k: v for k, v in wanted.items() if details.properties.get(k) != v}
            if lacking:  # a table created before it was given them: their own commit, once
                self._set_properties(path, lacking)
        else:
            created = {**stats_properties(df.schema, partition_by), **(properties or {})}
        with _call_site(self.spark, f"write {path}"):
            self._write(df, path, mode, list(partition_by), replace, txn, created)
        return True

    @abstractmethod
    def _delete_keys(self, path: str, keys: DataFrame) -> int: ...

    def delete_keys(self, path: str, keys: DataFrame) -> int:
        """Delete every row matching a row of `keys` on all of `keys`' columns; return how
        many rows went.

        For erasure (a type 1 objection): keys are few, tables are large, so only the data
        files holding a key are rewritten, in one Delta transaction (a failure leaves the
        table as it was). Deleting keys that are not there changes nothing, so a retried
        purge is a no-op. Removed files stay on disk for time travel until `vacuum`.
        """
        if not self.exists(path):
            return 0
        columns = self.schema(path).fieldNames()
        unknown = [c for c in keys.columns if c not in columns]
        if unknown or not keys.columns:
            raise ValueError(f"delete_keys on {path}: key columns not in the table: {', '.join(unknown)}")
        return self._delete_keys(path, keys.distinct())

    @abstractmethod
    def details(self, path: str) -> TableDetails:
        """The table's schema, Delta properties (metadata `configuration`) and partition columns."""

    @abstractmethod
    def _set_properties(self, path: str, properties: Mapping[str, str]) -> None:
        """Set table properties in one commit of their own."""

    @abstractmethod
    def _add_columns(self, path: str, fields: Sequence[StructField]) -> None:
        """Add nullable columns in one commit of their own (no data file is rewritten)."""

    def vacuum(self, path: str, retention_hours: int) -> int | None:
        """Physically delete the data files no version of the last `retention_hours` reads;
        return how many went (None where the engine does not say).

        Versions older than that can no longer be read (time travel to them fails); the
        latest version is unaffected. Erasure vacuums with zero retention: the old versions'
        files still hold the erased rows, and time travel must not bring them back. A table
        that declares its own file retention (`delta.deletedFileRetentionDuration`, as
        archives do) is never vacuumed with a shorter one: the refusal names the table.
        """
        if not self.exists(path):
            return 0
        declared = self.details(path).properties.get(FILE_RETENTION_PROPERTY)
        if declared is not None:
            try:
                minimum = interval_hours(declared)
            except ValueError:
                raise StorageError(
                    f"vacuum of Delta table {path} refused: its {FILE_RETENTION_PROPERTY} "
                    f"({declared!r}) is not an interval this platform reads"
                ) from None
            if retention_hours < minimum:
                raise StorageError(
                    f"vacuum of Delta table {path} with a retention of {retention_hours} hours "
                    f"refused: the table keeps deleted files for {declared} ({FILE_RETENTION_PROPERTY})"
                )
        return self._vacuum(path, retention_hours)

    @abstractmethod
    def _vacuum(self, path: str, retention_hours: int) -> int | None: ...

    @abstractmethod
    def compact(self, path: str) -> tuple[int, int]:
        """Rewrite the table's small files into fewer large ones, rows and their order
        unchanged, in one commit that changes no data; return (files removed, files added).
        """

    def remove_abandoned_writes(self, path: str, older_than_hours: int) -> int:
        """Delete what writes that died left outside the table's log, once nothing in it
        changed for `older_than_hours`; return how many writes' leftovers went. An engine
        whose writes leave nothing behind has none."""
        return 0

    @abstractmethod
    def tidy_log(self, path: str) -> None:
        """Checkpoint the Delta log and delete its entries older than the table's log
        retention (`delta.logRetentionDuration`, 30 days by default)."""


def write_failed(path: str, err: BaseException) -> str:
    """The message of a failed write: Spark's own text can quote row values, so it is kept
    only in the exception chain (shown with --debug), never in the message."""
    return f"write to Delta table {path} failed ({type(err).__name__}); the table is unchanged"


def empty_frame(spark: SparkSession, schema: StructType) -> DataFrame:
    return spark.createDataFrame([], schema)
