"""`caredata maintain` on a warehouse of a whole pipeline run: same rows, fewer files, and
the green tables and evidence tables left exactly as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from ops_data import local_run
from pyspark.sql import DataFrame, SparkSession

from caredata_spark import tables
from caredata_spark.cli import main
from caredata_spark.maintenance import LEFT_ALONE, MAINTAINED, maintain, maintained
from caredata_spark.publication_tables import load_publication
from caredata_spark.publications import latest_publication
from caredata_spark.storage import DeltaStore, open_store
from caredata_spark.tables import (
    AUDIT,
    IDENTITY_VAULT,
    PUBLICATIONS,
    clinical,
    green,
    publication_cells,
    table_path,
)


def test_every_table_is_maintained_or_left_alone_on_purpose() -> None:
    named = {value for name, value in vars(tables).items() if name.isupper() and isinstance(value, str)}
    named |= {clinical(dataset) for dataset in tables.DATASETS}
    assert named == set(MAINTAINED) | set(LEFT_ALONE) - {green("*")}


def held(spark: SparkSession, frame: DataFrame) -> DataFrame:
    """The rows now, in memory: vacuum may delete the files the frame would read later."""
    return spark.createDataFrame(frame.collect(), frame.schema)


@pytest.fixture(scope="module")
def warehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("maintain") / "warehouse"
    shutil.copytree(local_run(spark, tmp_path_factory), copy)
    return copy


def test_maintain_keeps_every_row_and_every_publication(
    spark: SparkSession, warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store: DeltaStore = open_store(spark)
    wh = str(warehouse)
    present = [t for t in maintained(load_publication()) if store.exists(table_path(wh, t))]
    assert clinical("gp_events") in present and len(present) >= 12
    assert publication_cells("ae_by_provider_month") in present
    before = {t: held(spark, store.read(table_path(wh, t))) for t in present}
    published = {name: held(spark, frame) for name, frame in latest_publication(store, wh).items()}
    greens = sorted(p.name for p in (warehouse / "green").iterdir())
    untouched = {t: store.version(table_path(wh, t)) for t in (AUDIT, PUBLICATIONS, *(green(g) for g in greens))}

    assert main(["--warehouse", wh, "maintain", "--retention-hours", "24"]) == 0
    printed = capsys.readouterr().out
    assert f"maintain: {len(present)} table(s)" in printed
    compacted = {line.split()[-1]: int(line.split()[0]) for line in printed.splitlines()[2:]}
    assert compacted.keys() == set(present) and compacted[IDENTITY_VAULT] > 1, printed

    for table in present:
        assert_df_equality(store.read(table_path(wh, table)), before[table], ignore_row_order=True, ignore_nullable=True)
    for name, frame in latest_publication(store, wh).items():
        assert_df_equality(frame, published[name], ignore_row_order=True, ignore_nullable=True)
    assert {t: store.version(table_path(wh, t)) for t in untouched} == untouched

    again = maintain(store, wh, retention_hours=24)
    assert {t: figures["files_compacted"] for t, figures in again.items()} == dict.fromkeys(present, 0)


def test_a_retention_shorter_than_a_day_is_refused(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--warehouse", str(warehouse), "maintain", "--retention-hours", "2"]) == 2
    assert "at least 24" in capsys.readouterr().err
