"""Storage contract, run against every Delta backend the session can load."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import duckdb
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.config import StorageSettings
from caredata_spark.storage import ARCHIVE_PROPERTIES, DeltaStore, SchemaMismatchError, StorageError, Txn, open_store
from caredata_spark.storage.base import FILE_RETENTION_PROPERTY as FILE_RETENTION
from caredata_spark.storage.base import STATS_COLUMNS_PROPERTY as STATS
from caredata_spark.storage.base import interval_hours

ROWS = [
    (1, "RTH", dt.date(2024, 1, 5), "E119", 2.5),
    (2, "RTH", dt.date(2024, 2, 1), None, None),
    (3, "RXH", dt.date(2023, 12, 31), "I10", 7.0),
    (4, "RXH", None, "K401", 1.0),
]
COLUMNS = "id long, provider string, event_date date, code string, value double"


def frame(spark: SparkSession, rows: list[tuple] = ROWS) -> DataFrame:
    return spark.createDataFrame(rows, COLUMNS)


def add_actions(path: Path) -> list[dict]:
    """Every add action in the Delta log (all commits)."""
    actions = []
    for commit in sorted((path / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            entry = json.loads(line)
            if "add" in entry:
                actions.append(entry["add"])
    return actions


def test_round_trip(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    assert store.write(frame(spark), path)
    assert_df_equality(store.read(path), frame(spark), ignore_row_order=True, ignore_nullable=True)
    assert store.version(path) == 0


def test_paths_with_spaces(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    """Warehouses live where operators put them: a space must not break reads or writes."""
    path = str(tmp_path / "safe haven" / "gp events")
    store.write(frame(spark, ROWS[:2]), path, partition_by=["provider"])
    store.write(frame(spark, ROWS[2:]), path, mode="append", partition_by=["provider"])
    assert_df_equality(
        store.read(path).select(*frame(spark).columns), frame(spark), ignore_row_order=True, ignore_nullable=True
    )


def test_append_and_read_old_version(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark, ROWS[:2]), path)
    store.write(frame(spark, ROWS[2:]), path, mode="append")
    assert store.version(path) == 1
    assert_df_equality(store.read(path), frame(spark), ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(
        store.read(path, version=0), frame(spark, ROWS[:2]), ignore_row_order=True, ignore_nullable=True
    )


def test_overwrite(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark), path)
    store.write(frame(spark, ROWS[:1]), path, mode="overwrite")
    assert_df_equality(store.read(path), frame(spark, ROWS[:1]), ignore_nullable=True)


def test_partition_overwrite_keeps_other_partitions(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark), path, partition_by=["provider"])
    replacement = [(9, "RTH", dt.date(2024, 3, 1), "J45", 3.0)]
    store.write(
        frame(spark, replacement),
        path,
        mode="overwrite",
        partition_by=["provider"],
        replace={"provider": ["RTH"]},
    )
    expected = frame(spark, replacement + ROWS[2:])
    assert_df_equality(store.read(path), expected, ignore_row_order=True, ignore_nullable=True)
    assert {p.name for p in (tmp_path / "t").glob("provider=*")} == {"provider=RTH", "provider=RXH"}


def test_partition_overwrite_refuses_rows_of_other_partitions(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark), path, partition_by=["provider"])
    with pytest.raises(StorageError):
        store.write(
            frame(spark), path, mode="overwrite", partition_by=["provider"], replace={"provider": ["RTH"]}
        )
    assert store.version(path) == 0
    assert store.read(path).count() == len(ROWS)


def test_idempotent_retry_commits_once(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    txn = Txn("ingest-2024-01", 1)
    assert store.write(frame(spark), path, txn=txn) is True
    assert store.write(frame(spark), path, txn=txn) is False
    assert store.version(path) == 0
    assert store.read(path).count() == len(ROWS)
    assert store.txn_version(path, "ingest-2024-01") == 1
    assert store.write(frame(spark), path, txn=Txn("ingest-2024-01", 2)) is True
    assert store.read(path).count() == 2 * len(ROWS)


def test_failed_task_leaves_table_unchanged(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = tmp_path / "t"
    store.write(frame(spark), str(path))
    files_before = sorted(p.name for p in path.rglob("*.parquet"))
    # a small task finishes and reports its file; then the large task fails on its last row
    ids = spark.range(0, 10, numPartitions=1).union(spark.range(10, 200_000, numPartitions=1))
    poisoned = (
        ids.select(
            F.col("id"),
            F.lit("RTH").alias("provider"),
            F.lit(None).cast("date").alias("event_date"),
            F.when(F.col("id") == 199_999, F.raise_error(F.lit("injected failure")))
            .otherwise(F.lit("X"))
            .alias("code"),
            F.lit(1.0).alias("value"),
        )
    )
    with pytest.raises(StorageError) as raised:
        store.write(poisoned, str(path))
    assert "injected failure" not in str(raised.value)  # Spark's text may quote row values
    assert store.version(str(path)) == 0
    assert_df_equality(store.read(str(path)), frame(spark), ignore_row_order=True, ignore_nullable=True)
    assert sorted(p.name for p in path.rglob("*.parquet")) == files_before


def test_file_statistics(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = tmp_path / "t"
    store.write(frame(spark).coalesce(1), str(path), partition_by=["provider"])
    stats = {
        a["partitionValues"]["provider"]: json.loads(a["stats"]) for a in add_actions(path)
    }
    rth = stats["RTH"]
    assert rth["numRecords"] == 2
    assert rth["minValues"]["id"] == 1 and rth["maxValues"]["id"] == 2
    assert rth["minValues"]["event_date"] == "2024-01-05"
    assert rth["maxValues"]["code"] == "E119"
    assert rth["nullCount"] == {"id": 0, "event_date": 0, "code": 1, "value": 1}
    assert stats["RXH"]["nullCount"]["event_date"] == 1


def test_record_keys_are_never_file_statistics(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    """Erasure deletes a key's rows and files; the log keeps old add actions, so it must
    never have stated a key as a min or max (see purge). Other columns keep their stats.
    The property names only columns delta-spark can skip on: it refuses partition columns,
    binary, boolean and array columns there."""
    path = tmp_path / "t"
    keyed = frame(spark).select(
        "*",
        F.concat(F.lit("A81001/P"), F.col("id").cast("string")).alias("record_key"),
        F.unhex(F.lit("0A0B")).alias("hash"),
        (F.col("id") > 2).alias("flag"),
        F.array(F.col("code")).alias("codes"),
    )
    store.write(keyed.coalesce(1), str(path), partition_by=["provider"])
    store.write(keyed.coalesce(1), str(path), mode="append", partition_by=["provider"])
    assert store.compact(str(path)) == (4, 2)  # the files compaction writes are checked too
    configuration = DeltaTable(str(path)).metadata().configuration
    assert configuration["delta.dataSkippingStatsColumns"] == "id,event_date,code,value"
    for action in add_actions(path):
        stats = json.loads(action["stats"])
        assert stats["minValues"]["id"] in (1, 3) and "code" in stats["maxValues"]
        assert all("record_key" not in stats.get(kind, {}) for kind in ("minValues", "maxValues", "nullCount"))
    assert "A81001/P" not in "".join(p.read_text() for p in (path / "_delta_log").glob("*.json"))


def test_an_archive_table_keeps_its_old_versions_from_vacuums(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    """Green tables: an operator's vacuum with the default retention removes nothing, and a
    short retention is refused, by the engine and by the platform's own vacuum alike, so
    every version a publication recorded stays readable."""
    path = str(tmp_path / "t")
    store.write(frame(spark), path, mode="overwrite", properties=ARCHIVE_PROPERTIES)
    store.write(frame(spark).filter(F.col("id") == 1), path, mode="overwrite", properties=ARCHIVE_PROPERTIES)
    assert store.version(path) == 1  # the properties were there: no commit of their own
    table = DeltaTable(path)
    assert store.details(path).properties.items() >= ARCHIVE_PROPERTIES.items()
    assert table.vacuum(dry_run=False) == []
    with pytest.raises(Exception, match="minimum retention for vacuum"):
        table.vacuum(retention_hours=24, dry_run=False)
    with pytest.raises(StorageError, match=r"vacuum of Delta table .*/t with a retention of 0 hours refused: .*36500 days"):
        store.vacuum(path, retention_hours=0)
    assert store.vacuum(path, retention_hours=36500 * 24) in (0, None)  # as long as it declares: allowed
    assert_df_equality(store.read(path, version=0), frame(spark), ignore_row_order=True)


def test_properties_reach_a_table_created_without_them(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    """A green table published before archives carried properties gets them at its next
    write, in a commit of their own before the data's; after that, vacuum refuses."""
    path = str(tmp_path / "t")
    store.write(frame(spark), path, mode="overwrite")
    assert FILE_RETENTION not in store.details(path).properties
    assert store.vacuum(path, retention_hours=0) in (0, None)  # no declared retention: allowed
    store.write(frame(spark, ROWS[:1]), path, mode="overwrite", properties=ARCHIVE_PROPERTIES)
    assert store.version(path) == 2  # 1: the properties, 2: the data
    assert store.details(path).properties.items() >= ARCHIVE_PROPERTIES.items()
    assert_df_equality(store.read(path), frame(spark, ROWS[:1]), ignore_nullable=True)
    assert_df_equality(store.read(path, version=1), frame(spark), ignore_row_order=True, ignore_nullable=True)
    with pytest.raises(StorageError, match="refused"):
        store.vacuum(path, retention_hours=24)


def test_a_table_made_by_another_writer_gets_the_statistics_property(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    """A table created without `delta.dataSkippingStatsColumns` (by delta-spark before the
    platform set it, or by another tool) carries it from the platform's next write on."""
    path = str(tmp_path / "t")
    write_deltalake(path, frame(spark, ROWS[:2]).withColumn("record_key", F.lit("A81001/P1")).toArrow())
    assert STATS not in store.details(path).properties
    more = frame(spark, ROWS[2:]).withColumn("record_key", F.lit("A81001/P2"))
    with pytest.raises(StorageError, match=r"/t refused: the table is partitioned by \(\), the write by \(provider\)"):
        store.write(more, path, partition_by=["provider"])
    store.write(more, path)
    assert store.details(path).properties[STATS] == "id,provider,event_date,code,value"
    assert store.details(path).partition_columns == ()
    assert store.version(path) == 2  # 1: the property, 2: the data
    store.write(frame(spark, ROWS[:1]).withColumn("record_key", F.lit("A81001/P3")), path)
    assert store.version(path) == 3  # the property was there: no commit of its own
    assert store.read(path).count() == 5


@pytest.mark.parametrize(
    ("interval", "hours"),
    [("interval 36500 days", 876000.0), ("interval 1 week", 168.0), ("7 days", 168.0),
     ("INTERVAL 1 day 12 hours", 36.0), ("interval 90 minutes", 1.5)],
)
def test_delta_intervals_in_hours(interval: str, hours: float) -> None:
    assert interval_hours(interval) == pytest.approx(hours)


@pytest.mark.parametrize("interval", ["interval 1 month", "interval", "seven days", "interval 7"])
def test_an_unreadable_interval_is_an_error(interval: str) -> None:
    with pytest.raises(ValueError, match="not a Delta interval"):
        interval_hours(interval)


def test_readable_by_deltalake_and_duckdb(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark), path, partition_by=["provider"])
    table = DeltaTable(path)
    assert table.version() == 0
    rows = table.to_pyarrow_table().sort_by("id").to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["provider"] == "RXH" and rows[0]["event_date"] == dt.date(2024, 1, 5)
    # DuckDB's own delta extension is a download; DuckDB scans the delta-rs dataset instead
    dataset = table.to_pyarrow_dataset()  # noqa: F841  (named for DuckDB's replacement scan)
    counts = duckdb.sql(
        "SELECT provider, count(*) AS n FROM dataset GROUP BY provider ORDER BY provider"
    ).fetchall()
    assert counts == [("RTH", 2), ("RXH", 2)]


def test_schema_mismatch_names_the_columns(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark), path)
    wrong = frame(spark).drop("code").withColumn("value", F.col("value").cast("string")).withColumn(
        "extra", F.lit(1)
    )
    with pytest.raises(SchemaMismatchError) as raised:
        store.write(wrong, path)
    message = str(raised.value)
    assert "missing columns: code" in message
    assert "unexpected columns: extra" in message
    assert "value (double in table, string in data)" in message
    assert store.version(path) == 0


def test_add_columns_lets_a_write_bring_a_new_column(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    """A table made before a column existed takes it on request; its old rows read null."""
    path = str(tmp_path / "t")
    store.write(frame(spark), path)
    newer = frame(spark, ROWS[:1]).withColumn("flag", F.lit(True))
    with pytest.raises(SchemaMismatchError, match="unexpected columns: flag"):
        store.write(newer, path)  # only on request
    store.write(newer, path, add_columns=True)
    assert store.schema(path)["flag"].nullable
    flags = store.read(path).groupBy("flag").count()
    assert_df_equality(flags, spark.createDataFrame([(None, 4), (True, 1)], "flag boolean, count long"),
                       ignore_row_order=True, ignore_nullable=True)
    store.write(newer, path, add_columns=True)  # the column is there now: a plain append
    assert store.read(path).count() == 6


def test_column_order_of_data_does_not_matter(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark), path)
    store.write(frame(spark).select("value", "code", "event_date", "provider", "id"), path)
    assert store.read(path).filter(F.col("id") == 3).select("code").first()[0] == "I10"


def test_reading_a_missing_table_names_it(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nowhere"):
        store.read(str(tmp_path / "nowhere"))


def test_reads_stay_distributed(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    store.write(spark.range(0, 10_000, numPartitions=4).select(
        F.col("id"), F.lit("RTH").alias("provider"), F.lit(None).cast("date").alias("event_date"),
        F.lit("X").alias("code"), F.lit(1.0).alias("value")), path)
    plan = store.read(path)._jdf.queryExecution().executedPlan().toString()
    assert "FileScan parquet" in plan or "Scan parquet" in plan or "delta" in plan.lower()
    assert "LocalTableScan" not in plan


def test_auto_backend_detects_missing_connector(spark: SparkSession) -> None:
    from caredata_spark.session import delta_connector_available

    assert delta_connector_available(spark) is False  # plain pyspark: no delta-spark jars
    assert open_store(spark).name == "delta-rs"
    with pytest.raises(StorageError, match="--packages io.delta:delta-spark_2.13"):
        open_store(spark, StorageSettings(backend="delta-spark"))


def data_file_ids(path: Path) -> set[int]:
    """ids in every Parquet data file on disk, referenced by the latest version or not."""
    import pyarrow.parquet as pq

    files = [p for p in path.rglob("*.parquet") if "_delta_log" not in p.parts]
    return {i for p in files for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}


def test_delete_keys_rewrites_only_files_holding_a_key(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = tmp_path / "t"
    store.write(frame(spark).coalesce(1), str(path), partition_by=["provider"])  # one file per provider
    store.write(frame(spark, [(5, "RTH", None, "X", 1.0)]), str(path), partition_by=["provider"])
    before = {a["path"] for a in add_actions(path)}
    keys = spark.createDataFrame([(1, "RTH"), (3, "RTH"), (99, "RXH")], "id long, provider string")

    assert store.delete_keys(str(path), keys) == 1  # (3, RXH) is not a key: RXH untouched
    assert store.version(str(path)) == 2
    expected = frame(spark, [*ROWS[1:], (5, "RTH", None, "X", 1.0)])
    assert_df_equality(store.read(str(path)), expected, ignore_row_order=True, ignore_nullable=True)
    live = set(DeltaTable(str(path)).get_add_actions(flatten=True).column("path").to_pylist())
    untouched = live & before
    assert len(untouched) == 2  # the RXH file and the second write's file keep their paths
    assert 1 in data_file_ids(path)  # still in the removed file: time travel reaches it

    store.vacuum(str(path), retention_hours=0)
    assert 1 not in data_file_ids(path)  # the purge is physical
    assert_df_equality(store.read(str(path)), expected, ignore_row_order=True, ignore_nullable=True)

    vacuumed = store.version(str(path))  # delta-rs logs vacuums as commits
    assert store.delete_keys(str(path), keys) == 0  # idempotent: nothing more to delete
    assert store.version(str(path)) == vacuumed


def test_delete_keys_emptying_a_file_and_absent_tables(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    path = str(tmp_path / "t")
    store.write(frame(spark).coalesce(1), path)
    keys = spark.createDataFrame([(i,) for i in (1, 2, 3, 4)], "id long")
    assert store.delete_keys(path, keys) == 4
    assert store.read(path).count() == 0
    assert store.delete_keys(str(tmp_path / "nowhere"), keys) == 0
    with pytest.raises(ValueError, match="not in the table: nope"):
        store.delete_keys(path, keys.withColumnRenamed("id", "nope"))


def test_compaction_keeps_rows_and_order_in_fewer_files(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    """Daily appends leave small files; compaction rewrites them without changing data."""
    path = tmp_path / "t"
    for row in ROWS:
        store.write(frame(spark, [row]), str(path), partition_by=["provider"])
    assert store.compact(str(path)) == (4, 2)  # one file per provider
    assert store.version(str(path)) == 4
    assert_df_equality(store.read(str(path)), frame(spark), ignore_row_order=True, ignore_nullable=True)
    assert store.compact(str(path)) == (0, 0)  # nothing small is left to join
    compaction = [json.loads(line) for line in (path / "_delta_log" / f"{4:020}.json").read_text().splitlines()]
    assert all(not a[kind]["dataChange"] for a in compaction for kind in ("add", "remove") if kind in a)

    assert len(data_file_ids(path)) == 4 and store.read(str(path), version=3).count() == 4
    assert store.vacuum(str(path), retention_hours=168) in (0, None)  # removed just now: kept
    assert store.read(str(path), version=3).count() == 4
    assert store.vacuum(str(path), retention_hours=0) in (4, None)
    assert len(list(path.rglob("*.parquet"))) - len(list((path / "_delta_log").glob("*.parquet"))) == 2
    assert_df_equality(store.read(str(path)), frame(spark), ignore_row_order=True, ignore_nullable=True)


def test_read_added_reads_only_the_files_committed_since_a_version(
    spark: SparkSession, store: DeltaStore, tmp_path: Path
) -> None:
    """A reader that consumed version 1 reads version 3's new rows, not the history; rows
    a compaction rewrote come back (the caller drops them), and no version reads all."""
    path = str(tmp_path / "t")
    for row in ROWS[:3]:
        store.write(frame(spark, [row]), path, partition_by=["provider"])

    def ids(since: int | None, until: int) -> list[int]:
        return sorted(r.id for r in store.read_added(path, since, until).collect())

    assert ids(since=1, until=2) == [3]
    assert ids(since=0, until=2) == [2, 3]
    assert ids(since=None, until=2) == [1, 2, 3]
    assert ids(since=2, until=2) == []
    assert store.read_added(path, 2, 2).columns == frame(spark).columns  # partition column too
    store.compact(path)  # version 3: RTH's two files become one
    store.write(frame(spark, [ROWS[3]]), path, partition_by=["provider"])
    assert ids(since=2, until=4) == [1, 2, 4]
    assert ids(since=99, until=4) == [1, 2, 3, 4]  # no such version: everything, not nothing


def test_read_added_reads_everything_once_the_log_no_longer_has_the_version(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = open_store(spark, StorageSettings(backend="delta-rs"))
    path = tmp_path / "t"
    store.write(frame(spark, ROWS[:2]), str(path))
    store.write(frame(spark, ROWS[2:3]), str(path))
    for commit in (path / "_delta_log").glob("*.json"):
        aged(commit, days=40)
    store.write(frame(spark, ROWS[3:]), str(path))
    store.tidy_log(str(path))  # versions 0 and 1 can no longer be loaded

    assert store.read_added(str(path), 1, 2).count() == 4
    assert store.read_added(str(path), 2, 2).count() == 0


def aged(path: Path, days: float) -> None:
    old = time.time() - days * 86400
    os.utime(path, (old, old))


def test_tidy_log_drops_expired_commits_and_keeps_the_table(spark: SparkSession, tmp_path: Path) -> None:
    """delta-rs writes no checkpoint for a table of few commits, so without one nothing ever
    leaves its log (delta-spark checkpoints and cleans up by itself)."""
    store = open_store(spark, StorageSettings(backend="delta-rs"))
    path = tmp_path / "t"
    store.write(frame(spark, ROWS[:2]), str(path), txn=Txn("ingest", 1))
    store.write(frame(spark, ROWS[2:]), str(path))
    log = path / "_delta_log"
    for commit in log.glob("*.json"):
        aged(commit, days=40)  # beyond the default 30-day log retention
    store.write(frame(spark, ROWS[:1]), str(path))

    store.tidy_log(str(path))
    assert sorted(p.name for p in log.glob("*.json")) == [f"{2:020}.json"]
    assert (log / f"{2:020}.checkpoint.parquet").exists()
    expected = frame(spark, [*ROWS, ROWS[0]])
    assert_df_equality(store.read(str(path)), expected, ignore_row_order=True, ignore_nullable=True)
    assert store.txn_version(str(path), "ingest") == 1  # a resumed run still knows it is done


def test_abandoned_staging_folders_go_and_live_ones_stay(spark: SparkSession, tmp_path: Path) -> None:
    """A killed job's staged files are never committed and never cleaned up by the job."""
    store = open_store(spark, StorageSettings(backend="delta-rs"))
    path = tmp_path / "t"
    store.write(frame(spark), str(path))
    abandoned, live = path / "_staging" / "abandoned", path / "_staging" / "live"
    for folder in (abandoned, live):
        (folder / "part=x").mkdir(parents=True)
        (folder / "part=x" / "part-0.parquet").write_bytes(b"rows")
    for item in (abandoned / "part=x" / "part-0.parquet", abandoned / "part=x", abandoned):
        aged(item, days=8)
    aged(live, days=8)  # an old folder whose write still adds files is not abandoned
    assert store.remove_abandoned_writes(str(path), older_than_hours=168) == 1
    assert not abandoned.exists() and live.exists()
    assert_df_equality(store.read(str(path)), frame(spark), ignore_row_order=True, ignore_nullable=True)
