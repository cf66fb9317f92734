"""Delta write throughput (through the active backend) against plain Spark Parquet.

Both write the same cached wide frame in the same run, so the ratio compares only the
write paths on this machine.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.storage import open_store


def wide_rows(spark: SparkSession, rows: int) -> DataFrame:
    """An admitted-care-like row: keys, codes, dates and numbers (~40 columns)."""
    ids = spark.range(0, rows, numPartitions=max(2, rows // 500_000))
    day = F.date_add(F.lit("2020-01-01").cast("date"), (F.col("id") % 1460).cast("int"))
    columns = [
        F.format_string("E%010d", F.col("id")).alias("record_key"),
        F.format_string("R%02d", F.col("id") % 97).alias("provider"),
        F.unhex(F.sha2(F.col("id").cast("string"), 256)).substr(1, 16).alias("h_nhs"),
        day.alias("admidate"),
        F.date_add(day, (F.col("id") % 9).cast("int")).alias("disdate"),
        (F.col("id") % 5).cast("string").alias("admimeth"),
        (F.col("id") % 120).cast("int").alias("age"),
        (F.col("id") % 2 + 1).cast("string").alias("sex"),
        F.rand(7).alias("cost"),
    ]
    columns += [
        F.when(F.col("id") % (i + 2) == 0, F.format_string("I%02d%d", F.col("id") % 99, F.lit(i)))
        .alias(f"diag_{i + 1:02d}")
        for i in range(20)
    ]
    columns += [
        F.when(F.col("id") % (i + 3) == 0, F.format_string("K%03d", F.col("id") % 999))
        .alias(f"opertn_{i + 1:02d}")
        for i in range(10)
    ]
    return ids.select(*columns)


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(spark: SparkSession, rows: int = 5_000_000) -> dict[str, Any]:
    store = open_store(spark)
    frame = wide_rows(spark, rows).persist(StorageLevel.MEMORY_AND_DISK)
    frame.count()
    scratch = tempfile.mkdtemp(prefix="bench-storage-")
    try:
        parquet_s = _timed(lambda: frame.write.mode("overwrite").parquet(f"{scratch}/parquet"))
        delta_s = _timed(lambda: store.write(frame, f"{scratch}/delta"))
    finally:
        frame.unpersist()
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "storage.rows": rows,
        "storage.backend": store.name,
        "storage.parquet_rows_per_s": round(rows / parquet_s),
        "storage.delta_rows_per_s": round(rows / delta_s),
        "storage.delta_vs_parquet": round(parquet_s / delta_s, 3),
        "storage.target_delta_vs_parquet": ">= 0.8",
    }
