"""Delta tables through the delta-spark JVM connector (clusters, Databricks).

Used when the session was started with `--packages io.delta:delta-spark_2.13:<version>`
and the Delta session extension; the connector does the commit protocol itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql.types import StructField, StructType

from caredata_spark.storage.base import (
    DeltaStore,
    StorageError,
    TableDetails,
    Txn,
    WriteMode,
    empty_frame,
    write_failed,
)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def replace_where(replace: Mapping[str, Sequence[str]]) -> str:
    """The `replaceWhere` predicate for a partition overwrite."""
    return " AND ".join(
        f"`{column}` IN ({', '.join(_sql_literal(v) for v in values)})"
        for column, values in replace.items()
    )


class DeltaSparkStore(DeltaStore):
    name = "delta-spark"

    def exists(self, path: str) -> bool:
        return self.version(path) is not None

    def _history_version(self, path: str) -> int | None:
        try:
            row = self.spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
        except Exception:  # AnalysisException when there is no table at the path
            return None
        return None if row is None else int(row["version"])

    def version(self, path: str) -> int | None:
        return self._history_version(path)

    def schema(self, path: str) -> StructType:
        return self.read(path).schema

    def txn_version(self, path: str, app_id: str) -> int | None:
        # The txn actions live in the Delta log; delta-rs reads any Delta log on the driver.
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(path):
            return None
        return DeltaTable(path).transaction_version(app_id)

    def read(self, path: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            return reader.load(path)
        except Exception as err:
            raise StorageError(f"cannot read Delta table {path} ({type(err).__name__})") from err

    def read_added(self, path: str, since: int | None, until: int) -> DataFrame:
        """As the interface says; a table with deletion vectors is read whole, because the
        added files' own rows would include ones a vector deletes (the platform's tables
        have none: neither engine turns them on)."""
        if self.details(path).properties.get("delta.enableDeletionVectors") == "true":
            return self.read(path, until)
        return super().read_added(path, since, until)

    def _data_files(self, path: str, version: int) -> list[str]:
        return self.read(path, version).inputFiles()

    def _read_files(self, path: str, version: int, files: Sequence[str]) -> DataFrame:
        schema = self.read(path, version).schema
        if not files:
            return empty_frame(self.spark, schema)
        # the schema names the partition columns; basePath lets Spark read them off the folders
        frame = self.spark.read.schema(schema).option("basePath", path).parquet(*files)
        return frame.select(*schema.fieldNames())

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
        writer = df.write.format("delta").mode(mode)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if replace is not None:
            writer = writer.option("replaceWhere", replace_where(replace))
        if txn is not None:
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        if properties:  # `delta.` writer options become table properties on creation
            writer = writer.options(**properties)
        try:
            writer.save(path)
        except Exception as err:
            raise StorageError(write_failed(path, err)) from err

    def _delete_keys(self, path: str, keys: DataFrame) -> int:
        """MERGE ... WHEN MATCHED DELETE: the connector rewrites only the files holding a key
        and commits removes and adds in one transaction. The join is the connector's (a
        shuffle, or a broadcast of the few keys)."""
        from delta.tables import DeltaTable

        condition = " AND ".join(f"t.`{c}` = k.`{c}`" for c in keys.columns)
        before = self.version(path)
        try:
            DeltaTable.forPath(self.spark, path).alias("t").merge(
                keys.alias("k"), condition
            ).whenMatchedDelete().execute()
            metrics = self.spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
        except Exception as err:
            raise StorageError(write_failed(path, err)) from err
        if metrics is None or int(metrics["version"]) == before:  # nothing matched, no commit
            return 0
        return int((metrics["operationMetrics"] or {}).get("numTargetRowsDeleted", 0))

    def details(self, path: str) -> TableDetails:
        detail = self.spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
        if detail is None:
            raise StorageError(f"no Delta table at {path}")
        return TableDetails(
            self.schema(path), dict(detail["properties"] or {}), tuple(detail["partitionColumns"] or ())
        )

    def _set_properties(self, path: str, properties: Mapping[str, str]) -> None:
        pairs = ", ".join(f"{_sql_literal(k)} = {_sql_literal(v)}" for k, v in properties.items())
        try:
            self.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({pairs})")
        except Exception as err:
            raise StorageError(f"cannot set properties of Delta table {path} ({type(err).__name__})") from err

    def _add_columns(self, path: str, fields: Sequence[StructField]) -> None:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in fields)
        try:
            self.spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
        except Exception as err:
            raise StorageError(f"cannot add columns to Delta table {path} ({type(err).__name__})") from err

    def _vacuum(self, path: str, retention_hours: int) -> int | None:
        """The connector's VACUUM, which logs but does not return what it deleted."""
        key = "spark.databricks.delta.retentionDurationCheck.enabled"
        previous = self.spark.conf.get(key, "true")
        self.spark.conf.set(key, "false")  # retention under 7 days is refused by default
        try:
            self.spark.sql(f"VACUUM delta.`{path}` RETAIN {int(retention_hours)} HOURS")
        finally:
            self.spark.conf.set(key, previous)
        return None

    def compact(self, path: str) -> tuple[int, int]:
        """OPTIMIZE: the connector bin-packs the files in distributed tasks."""
        from delta.tables import DeltaTable

        try:
            metrics = DeltaTable.forPath(self.spark, path).optimize().executeCompaction().first()
        except Exception as err:
            raise StorageError(write_failed(path, err)) from err
        figures = metrics["metrics"] if metrics else None
        return (int(figures["numFilesRemoved"]), int(figures["numFilesAdded"])) if figures else (0, 0)

    def tidy_log(self, path: str) -> None:
        """Nothing to do: the connector checkpoints every 10 commits and deletes expired log
        entries at each checkpoint (`delta.enableExpiredLogCleanup`)."""
