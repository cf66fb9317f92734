"""Linkage speed and quality on synthetic data, scored against its ground truth.

`run(warehouse, truth)` links an ingested warehouse from scratch (its `linkage/` tables are
removed first) and compares the HES-to-GP links with the truth pairwise, as linkage
studies do: a pair is (hospital record key, GP record key); predicted pairs share a
person_id, true pairs share the synthetic person. Counted by aggregation per
(person_id, true person), never by listing pairs, so it scales with the data.

`python -m bench linkage --people 100000 1000000` (or `python -m bench.bench_linkage`)
prepares (and caches) ingested warehouses of those sizes and prints, side by side, our
figures and Splink 5's on the same records (bench/bench_splink.py), the 1M/100k time
ratio and the targets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.config import SparkSettings
from caredata_spark.linkage.job import link
from caredata_spark.linkage.records import GP, SOURCES
from caredata_spark.linkage.settings import LinkageSettings
from caredata_spark.session import build_session
from caredata_spark.storage import open_store
from caredata_spark.tables import LINK_MAP, table_path

TRUTH_RECORDS = "records"  # caredata_spark.synthetic.generate.TRUTH_RECORDS


def _pairs(counts: DataFrame, *keys: str) -> DataFrame:
    """Sum over groups of (hospital keys x GP keys): the HES-to-GP pairs the groups hold."""
    per_group = counts.groupBy(*keys).agg(
        F.sum(F.when(F.col("source") != GP, 1).otherwise(0)).cast("double").alias("hes"),
        F.sum(F.when(F.col("source") == GP, 1).otherwise(0)).cast("double").alias("gp"),
    )
    return per_group.agg(F.sum(F.col("hes") * F.col("gp")).alias("pairs"))


def link_quality(link_map: DataFrame, truth: DataFrame) -> dict[str, float]:
    """Pairwise precision and recall of HES-to-GP links, and the share of HES keys linked.

    Only record keys that reached linkage count (quarantined rows are ingest's business).
    A HES key is linked when its person holds a GP key: a hospital-only person is no link
    to GP records, so ours and Splink's clusters (bench_splink) are scored alike.
    """
    dataset_to_source = F.create_map(*[F.lit(x) for pair in SOURCES.items() for x in pair])
    true_person = (
        truth.filter(F.col("dataset").isin(*SOURCES))
        .select(dataset_to_source[F.col("dataset")].alias("source"), "record_key", F.col("person_id").alias("true_person"))
        .dropDuplicates(["source", "record_key"])
    )
    keys = link_map.select("source", "record_key", "person_id").join(true_person, on=["source", "record_key"], how="inner")
    linked = keys.filter(F.col("person_id").isNotNull())
    predicted = _pairs(linked, "person_id").first()["pairs"] or 0.0
    correct = _pairs(linked, "person_id", "true_person").first()["pairs"] or 0.0
    actual = _pairs(keys, "true_person").first()["pairs"] or 0.0
    with_gp = linked.filter(F.col("source") == GP).select("person_id").distinct().withColumn("to_gp", F.lit(1))
    hospital = keys.filter(F.col("source") != GP).join(with_gp, on="person_id", how="left").agg(
        F.count(F.lit(1)).alias("keys"), F.count("to_gp").alias("linked")
    ).first()
    return {
        "precision": round(correct / predicted, 6) if predicted else 1.0,
        "recall": round(correct / actual, 6) if actual else 1.0,
        "hes_linked_share": round(hospital["linked"] / hospital["keys"], 6) if hospital["keys"] else 0.0,
        "hes_keys": int(hospital["keys"]),
    }


def run(warehouse: str, truth: str, settings: LinkageSettings | None = None) -> dict[str, Any]:
    """Link `warehouse` from scratch and score it against the synthetic `truth` folder."""
    spark = SparkSession.getActiveSession() or build_session()
    store = open_store(spark)
    shutil.rmtree(Path(warehouse) / "linkage", ignore_errors=True)
    started = time.perf_counter()
    summary = link(spark, store, warehouse, settings or LinkageSettings())
    seconds = time.perf_counter() - started
    quality = link_quality(
        store.read(table_path(warehouse, LINK_MAP)), store.read(str(Path(truth) / TRUTH_RECORDS))
    )
    steps: dict[str, int] = {}
    for source, by_step in summary["records"].items():
        if source != GP:
            for step, n in by_step.items():
                steps[step] = steps.get(step, 0) + n
    return {"link_seconds": round(seconds, 1), **quality, "hes_steps": steps}


def prepared(spark: SparkSession, people: int) -> tuple[str, str]:
    """An ingested warehouse of `people` synthetic people and its truth, cached per size."""
    from bench.data import CACHE, synthetic_landing
    from caredata_spark.config import KeySettings, Settings
    from caredata_spark.ingest import ingest
    from caredata_spark.keys import generate_keys

    landing, truth, _ = synthetic_landing(spark, people)
    root = landing.parent / "linkage-bench"
    warehouse = root / "warehouse"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        generate_keys(root / "keys")
        settings = Settings(
            keys=KeySettings(
                directory=str(root / "keys"), linkage_env="-", vault_env="-", pseudonym_env="-", transport_env="-"
            )
        )
        ingest(spark, open_store(spark), settings, str(landing), str(warehouse))
        (root / ".complete").touch()
    assert str(root).startswith(str(CACHE))
    return str(warehouse), str(truth)


TARGET_PRECISION = 0.9995
TARGET_SCALING = 1.1  # 10x people in at most 11x the time


def _against_splink(spark: SparkSession, people: int, warehouse: str, truth: str) -> dict[str, Any]:
    """Splink's figures on the records our link map holds, or why there are none."""
    from bench.data import synthetic_landing

    try:
        from bench.bench_splink import compare
    except ImportError:
        return {"splink": "not installed: pip install -e '.[bench]'"}
    store = open_store(spark)
    landing = synthetic_landing(spark, people)[0]
    return compare(
        spark, landing, store.read(table_path(warehouse, LINK_MAP)), store.read(str(Path(truth) / TRUTH_RECORDS))
    )


def side_by_side(spark: SparkSession, people: int) -> dict[str, Any]:
    """Our linkage and Splink's on the same `people`, as `linkage.<people>.*` figures."""
    warehouse, truth = prepared(spark, people)
    figures = run(warehouse, truth)
    figures.update(_against_splink(spark, people, warehouse, truth))
    if "splink_probabilistic_recall" in figures:
        figures["recall_minus_splink_probabilistic"] = round(
            figures["recall"] - figures["splink_probabilistic_recall"], 6
        )
        figures["seconds_vs_splink_probabilistic"] = round(
            figures["link_seconds"] / max(figures["splink_probabilistic_seconds"], 0.1), 2
        )
    return {f"linkage.{people}.{key}": value for key, value in figures.items()}


def across_sizes(spark: SparkSession, sizes: Sequence[int]) -> dict[str, Any]:
    """`side_by_side` per size, the time ratio between the largest and smallest, the targets."""
    figures: dict[str, Any] = {}
    for people in sizes:
        figures.update(side_by_side(spark, people))
    small, large = min(sizes), max(sizes)
    figures["linkage.target_precision"] = f">= {TARGET_PRECISION}"
    figures["linkage.target_recall"] = "> splink_probabilistic_recall (recall_minus_splink_probabilistic > 0)"
    figures[f"linkage.target_seconds_{large}"] = "<= splink_probabilistic_seconds (seconds_vs_splink_probabilistic <= 1)"
    if large > small:
        seconds = (figures[f"linkage.{p}.link_seconds"] for p in (large, small))
        figures[f"linkage.time_ratio_{large}_vs_{small}"] = round(next(seconds) / next(seconds), 2)
        target = TARGET_SCALING * large / small
        figures[f"linkage.target_time_ratio_{large}_vs_{small}"] = f"<= {target:g} ({large // small}x people)"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    spark = build_session(SparkSettings(app_name="caredata-bench-linkage", driver_memory="8g"))
    print(json.dumps(across_sizes(spark, args.people), indent=2))

if __name__ == "__main__":
    main()
