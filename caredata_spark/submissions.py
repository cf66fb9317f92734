"""The submissions ledger and the ingest run plan.

A run first records the exact files it will ingest (`ingest/runs`), then writes every table
with the Delta transaction id (`caredata-ingest/<table>`, run_id), and records the ledger
last. A run that died part-way is resumed with the same files and run id: tables it already
committed skip the write, the rest are written, so nothing is duplicated or lost. Files
that arrived meanwhile wait for the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from pyspark.sql.types import (
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from caredata_spark.landing import LandedFile, hash_files, new_submissions
from caredata_spark.storage import DeltaStore, Txn
from caredata_spark.tables import INGEST_RUNS, SUBMISSIONS, table_path

LEDGER = StructType(
    [
        StructField("submission_id", StringType()),
        StructField("dataset", StringType()),
        StructField("submitter", StringType()),
        StructField("file", StringType()),
        StructField("format", StringType()),
        StructField("bytes", LongType()),
        StructField("run_id", LongType()),
        StructField("status", StringType()),  # ingested | refused
        StructField("reason", StringType()),
        StructField("rows_read", LongType()),
        StructField("rows_accepted", LongType()),
        StructField("rows_quarantined", LongType()),
        StructField("rows_dropped", LongType()),
        StructField("recorded_at", TimestampType()),
    ]
)


RUNS = StructType(
    [
        StructField("run_id", LongType()),
        StructField("submission_id", StringType()),
        StructField("path", StringType()),
        StructField("dataset", StringType()),
        StructField("submitter", StringType()),
        StructField("format", StringType()),
        StructField("bytes", LongType()),
        StructField("planned_at", TimestampType()),
    ]
)


@dataclass(frozen=True)
class PlannedFile:
    submission_id: str
    path: str
    dataset: str
    submitter: str
    format: str
    bytes: int

    @classmethod
    def from_row(cls, row: Row) -> PlannedFile:
        return cls(row["submission_id"], row["path"], row["dataset"], row["submitter"], row["format"], row["bytes"])


def txn(table: str, run_id: int) -> Txn:
    return Txn(f"caredata-ingest/{table}", run_id)


def read_or_empty(spark: SparkSession, store: DeltaStore, path: str, schema: StructType) -> DataFrame:
    return store.read(path) if store.exists(path) else spark.createDataFrame([], schema)


def plan_run(
    spark: SparkSession, store: DeltaStore, warehouse: str, files: list[LandedFile], retry_refused: bool = False
) -> tuple[int, list[PlannedFile], bool]:
    """(run id, files, resumed): the unfinished run if there is one, else the new files
    (with `retry_refused`, also those the ledger records only as refused).

    The plan and ledger grow with files, not people, so they are read to the driver.
    """
    runs_path = table_path(warehouse, INGEST_RUNS)
    ledger = read_or_empty(spark, store, table_path(warehouse, SUBMISSIONS), LEDGER)
    runs = read_or_empty(spark, store, runs_path, RUNS)
    last = runs.agg(F.max("run_id")).first()[0]
    finished = {r[0] for r in ledger.select("run_id").distinct().collect()}
    if last is not None and last not in finished:
        planned = runs.filter(F.col("run_id") == last).collect()
        return last, [PlannedFile.from_row(r) for r in planned], True
    run_id = (last or 0) + 1
    plan = [PlannedFile.from_row(r) for r in hash_files(spark, files).transform(new_submissions(ledger, retry_refused)).collect()]
    if plan:
        rows = spark.createDataFrame(
            [(run_id, p.submission_id, p.path, p.dataset, p.submitter, p.format, p.bytes, None) for p in plan],
            RUNS,
        ).withColumn("planned_at", F.current_timestamp())
        store.write(rows, runs_path, txn=txn(INGEST_RUNS, run_id))
    return run_id, plan, False


def latest_per_key(ledger: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """One row per record key: the one ingested by the latest run (then the greatest
    submission id, an arbitrary but stable tie-break within a run).

    The ledger has one row per file, not per record, so it is broadcast; the window is one
    shuffle of the clinical table by record key.
    """
    runs = (
        ledger.where(F.col("status") == "ingested")
        .groupBy("submission_id")
        .agg(F.max("run_id").alias("run_id"))
    )

    def transform(records: DataFrame) -> DataFrame:
        newest_first = Window.partitionBy("record_key").orderBy(
            F.col("run_id").desc_nulls_last(), F.col("submission_id").desc()
        )
        return (
            records.join(F.broadcast(runs), on="submission_id", how="left")
            .withColumn("_newest", F.row_number().over(newest_first))
            .where(F.col("_newest") == 1)
            .drop("_newest", "run_id")
        )

    return transform
