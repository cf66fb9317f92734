"""Delta Lake storage behind one interface; `open_store` picks the engine.

With the delta-spark connector on the classpath (a cluster or Databricks) the connector
writes; otherwise executors write Parquet and delta-rs commits it. Both produce genuine
Delta tables that delta-rs, DuckDB and Spark read alike.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from caredata_spark.config import StorageSettings
from caredata_spark.session import delta_connector_available
from caredata_spark.storage.base import ARCHIVE_PROPERTIES, DeltaStore, SchemaMismatchError, StorageError, Txn
from caredata_spark.storage.delta_rs import DeltaRsStore
from caredata_spark.storage.delta_spark import DeltaSparkStore

__all__ = [
    "ARCHIVE_PROPERTIES",
    "DeltaRsStore",
    "DeltaSparkStore",
    "DeltaStore",
    "SchemaMismatchError",
    "StorageError",
    "Txn",
    "open_store",
]


def open_store(spark: SparkSession, settings: StorageSettings | None = None) -> DeltaStore:
    backend = (settings or StorageSettings()).backend
    if backend == "auto":
        backend = "delta-spark" if delta_connector_available(spark) else "delta-rs"
    if backend == "delta-spark":
        if not delta_connector_available(spark):
            raise StorageError(
                "storage.backend is delta-spark but the Delta connector is not loaded: start "
                "Spark with --packages io.delta:delta-spark_2.13:<version> and the Delta "
                "session extension, or set storage.backend: auto"
            )
        return DeltaSparkStore(spark)
    return DeltaRsStore(spark)
