"""Linkage speed and quality on synthetic data, scored against its ground truth.

`run(warehouse, truth)` links an ingested warehouse from scratch (its `linkage/` tables are
removed first) and compares the HES-to-GP links with the truth pairwise, as linkage
studies do: a pair is (hospital record key, GP record key); predicted pairs share a
person_id, true pairs share the synthetic person. Counted by aggregation per
(person_id, true person), never by listing pairs, so it scales with the data.

`python -m bench.bench_linkage --people 100000 1000000` prepares (and caches) ingested
warehouses of those sizes and prints the figures and the 1M/100k time ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
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
    hospital = keys.filter(F.col("source") != GP).agg(
        F.count(F.lit(1)).alias("keys"), F.count("person_id").alias("linked")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    spark = build_session(SparkSettings(app_name="caredata-bench-linkage", driver_memory="8g"))
    figures: dict[str, Any] = {}
    for people in args.people:
        figures[f"linkage.{people}"] = run(*prepared(spark, people))
        print(json.dumps({f"linkage.{people}": figures[f"linkage.{people}"]}, indent=2), flush=True)
    if len(args.people) == 2:
        small, large = (figures[f"linkage.{p}"]["link_seconds"] for p in sorted(args.people))
        figures["linkage.time_ratio"] = round(large / small, 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
