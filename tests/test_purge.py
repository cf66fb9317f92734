"""A type 1 dissent arriving after the patient's GP rows erases them everywhere, physically."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from ingest_data import OTHER_NHS, TYPE1_NHS, VALID_NHS, run, write
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.linkage.job import link
from caredata_spark.linkage.settings import LinkageSettings
from caredata_spark.cli import main
from caredata_spark.purge import purge_type1, sweep
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import (
    AUDIT,
    IDENTITY_VAULT,
    LINK_MAP,
    OBJECTIONS,
    PERSONS,
    QUARANTINE,
    clinical,
    table_path,
)

OBJECTOR = "A81001/P2"
EVENTS_HEADER = "PRACTICE_CODE,PATIENT_ID,NHS_NUMBER,DOB,SEX,POSTCODE,EVENT_DATE,SNOMED_CODE,VALUE"
PURGED = (PERSONS, LINK_MAP, clinical("gp_patients"), clinical("gp_events"), IDENTITY_VAULT, QUARANTINE)


def land_run_1(landing: Path) -> None:
    """P1 and P3 stay; P2 objects later. One of P2's lines is quarantined (impossible date)."""
    write(landing, "gp_patients", "A81001", "patients.csv", [
        "PRACTICE_CODE,PATIENT_ID,NHS_NUMBER,DOB,SEX,POSTCODE,REG_DATE,DEREG_DATE",
        f"A81001,P1,{VALID_NHS},1980-05-04,1,LS1 4AB,2010-01-01,",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2011-03-04,",
        f"A81001,P3,{OTHER_NHS},1970-07-07,1,LS6 1AA,2012-05-06,",
    ])
    write(landing, "gp_events", "A81001", "events.csv", [
        EVENTS_HEADER,
        f"A81001,P1,{VALID_NHS},1980-05-04,1,LS1 4AB,2024-01-01,44054006,7.5",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2024-01-02,38341003,120",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2024-01-03,44054006,6.1",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2024-02-30,44054006,6.2",  # quarantined
        f"A81001,P3,{OTHER_NHS},1970-07-07,1,LS6 1AA,2024-02-30,44054006,5.0",  # quarantined
        f"A81001,P3,{OTHER_NHS},1970-07-07,1,LS6 1AA,2024-01-04,38341003,130",
    ])


def snapshot(spark: SparkSession, store: DeltaStore, warehouse: str, table: str) -> DataFrame:
    """A table's rows now, held in memory: vacuum deletes the files an old version read."""
    rows = store.read(table_path(warehouse, table))
    return spark.createDataFrame(rows.collect(), rows.schema)


def others(frame: DataFrame, objector_person: str) -> DataFrame:
    column = "person_id" if "record_key" not in frame.columns else "record_key"
    gone = objector_person if column == "person_id" else OBJECTOR
    return frame.filter(F.col(column).isNull() | (F.col(column) != gone))


def string_values(path: Path) -> set[str]:
    """Every string value of a Parquet file (all columns, nested lists included)."""
    table = pq.read_table(path)
    values: set[str] = set()
    for column in table.columns:
        flat = column.combine_chunks()
        while pa.types.is_list(flat.type):
            flat = flat.flatten()
        if pa.types.is_string(flat.type) or pa.types.is_large_string(flat.type):
            values.update(v for v in flat.to_pylist() if v is not None)
    return values


@pytest.fixture(scope="module")
def erased(spark: SparkSession, keys, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    from caredata_spark.storage import open_store

    store = open_store(spark)
    root = tmp_path_factory.mktemp("purge")
    landing, warehouse = root / "landing", root / "warehouse"
    land_run_1(landing)
    run(spark, store, keys, landing, warehouse)
    wh = str(warehouse)
    link(spark, store, wh, LinkageSettings())
    person = (
        store.read(table_path(wh, LINK_MAP)).filter(F.col("record_key") == OBJECTOR).select("person_id").first()[0]
    )
    before = {t: snapshot(spark, store, wh, t) for t in PURGED}
    write(landing, "gp_events", "A81001", "events-feb.csv", [
        EVENTS_HEADER, f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2024-02-10,827241000000103,",
    ])
    result = run(spark, store, keys, landing, warehouse)
    return store, warehouse, person, before, result


def test_earlier_rows_of_a_new_objector_are_erased_from_every_table(erased) -> None:
    store, warehouse, person, _, result = erased
    assert result.purged == {
        PERSONS: 1,  # the one identity P2's registration gave its person
        LINK_MAP: 1,
        clinical("gp_patients"): 1,
        clinical("gp_events"): 2,
        IDENTITY_VAULT: 2,  # one per (key, submission): the patients file and the events file
        QUARANTINE: 1,
    }
    wh = str(warehouse)
    for table in PURGED:
        rows = store.read(table_path(wh, table))
        if "record_key" in rows.columns:
            assert rows.filter(F.col("record_key") == OBJECTOR).count() == 0, table
        else:
            assert rows.filter(F.col("person_id") == person).count() == 0, table
    # the objection itself is kept (no identifier), so it stays enforced
    events = store.read(table_path(wh, OBJECTIONS)).filter(F.col("record_key") == OBJECTOR)
    assert events.count() == 1


def erasures(spark: SparkSession, store: DeltaStore, warehouse: str, requester: str) -> DataFrame:
    return (
        store.read(table_path(warehouse, AUDIT))
        .filter((F.col("action") == "erasure") & (F.col("requester") == requester))
        .select("outcome", F.array_sort("fields").alias("fields"), "rows")
    )


def test_the_erasure_is_audited_by_table_and_count(spark: SparkSession, erased) -> None:
    """Started, then done with the rows erased per table: evidence without a key in it."""
    store, warehouse, _, _, result = erased
    erased_per_table = sorted(f"{table}={rows}" for table, rows in result.purged.items())
    expected = spark.createDataFrame(
        [("started", [], None), ("done", erased_per_table, 8)], "outcome string, fields array<string>, rows long"
    )
    assert_df_equality(
        erasures(spark, store, str(warehouse), "caredata ingest"), expected, ignore_row_order=True, ignore_nullable=True
    )


def test_no_data_file_left_on_disk_holds_the_objector(erased) -> None:
    _, warehouse, person, _, _ = erased
    objections = warehouse / OBJECTIONS
    data_files = [
        p for p in warehouse.rglob("*.parquet")
        if "_delta_log" not in p.parts and objections not in p.parents and "_staging" not in p.parts
    ]
    assert data_files
    for path in data_files:  # every file on disk, not only the latest versions': proves the vacuum
        values = string_values(path)
        assert OBJECTOR not in values and person not in values, path


def log_text(path: Path) -> str:
    """A Delta log file as text: JSON commits as they are, Parquet checkpoints row by row."""
    return str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else path.read_text()


def test_no_delta_log_names_the_objector(erased) -> None:
    """The log outlives vacuum: an erased key stated as some file's min or max would stay."""
    _, warehouse, _, _, _ = erased
    logs = [p for table in PURGED for p in (warehouse / table / "_delta_log").rglob("*") if p.is_file()]
    assert logs
    for path in logs:
        assert OBJECTOR not in log_text(path), path


def test_other_patients_rows_are_untouched(spark: SparkSession, erased) -> None:
    store, warehouse, person, before, _ = erased
    for table, rows in before.items():
        after = store.read(table_path(str(warehouse), table))
        kept = others(rows, person)
        assert kept.count() > 0, table
        assert_df_equality(others(after, person), kept, ignore_row_order=True, ignore_nullable=True)


def test_a_rerun_changes_nothing(spark: SparkSession, keys, erased) -> None:  # noqa: F811
    store, warehouse, _, _, _ = erased
    wh = str(warehouse)
    rows = {t: snapshot(spark, store, wh, t) for t in PURGED}
    files = {t: sorted(DeltaTable(table_path(wh, t)).file_uris()) for t in PURGED}
    again = run(spark, store, keys, warehouse.parent / "landing", warehouse)
    assert again.files == 0 and again.purged == {}
    objector = spark.createDataFrame([(OBJECTOR,)], "record_key string")
    assert set(purge_type1(store, wh, objector, requester="a rerun").values()) == {0}  # the same erasure again
    for table in PURGED:
        assert sorted(DeltaTable(table_path(wh, table)).file_uris()) == files[table], table
        assert_df_equality(
            store.read(table_path(wh, table)), rows[table], ignore_row_order=True, ignore_nullable=True
        )


def test_a_sweep_erases_a_standing_objectors_rows_that_came_back(
    spark: SparkSession, erased, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows of a standing objector restored after the erasure (from a backup, say, or
    stored before ingest erased earlier rows) go at `caredata purge`, and only they."""
    store, warehouse, person, before, _ = erased
    wh, events = str(warehouse), clinical("gp_events")
    store.write(before[events].filter(F.col("record_key") == OBJECTOR), table_path(wh, events))
    assert store.read(table_path(wh, events)).filter(F.col("record_key") == OBJECTOR).count() == 2
    assert main(["--warehouse", wh, "purge", "--requester", "IG officer"]) == 0
    assert "2 stored GP row(s) of standing type 1 objectors erased" in capsys.readouterr().out
    assert store.read(table_path(wh, events)).filter(F.col("record_key") == OBJECTOR).count() == 0
    assert_df_equality(
        store.read(table_path(wh, events)), others(before[events], person), ignore_row_order=True, ignore_nullable=True
    )
    done = erasures(spark, store, wh, "IG officer").filter(F.col("outcome") == "done").first()
    assert done["rows"] == 2 and f"{events}=2" in done["fields"]
    assert set(sweep(store, wh, requester="IG officer").values()) == {0}
