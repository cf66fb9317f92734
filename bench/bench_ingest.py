"""Ingest throughput against a plain Spark CSV -> Parquet copy of the same files.

Both run in the same session on the same cached synthetic landing zone, so the ratio
compares the whole ingest (parsing, validation, hashing, encryption of the vault and
quarantine, the type 1 drop, seven Delta tables) with the least a copy must do.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.data import synthetic_landing
from bench.stages import stage_seconds
from caredata_spark.config import KeySettings, Settings
from caredata_spark.contract import DATASETS
from caredata_spark.ingest import ingest
from caredata_spark.keys import generate_keys
from caredata_spark.storage import open_store


def csv_to_parquet(spark: SparkSession, landing: Path, target: Path) -> int:
    """The baseline: read every CSV submission with a header and write it as Parquet."""
    rows = 0
    for name in DATASETS:
        files = sorted(str(p) for p in (landing / name).glob("*/*.csv"))
        if files:
            frame = spark.read.option("header", True).csv(files)
            frame.write.parquet(str(target / name))
            rows += spark.read.parquet(str(target / name)).count()
    return rows


def run(spark: SparkSession, people: int) -> dict[str, Any]:
    landing, _, generated = synthetic_landing(spark, people)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    prefix = f"ingest.{people}"
    try:
        keys = scratch / "keys"
        generate_keys(keys)
        settings = Settings(keys=KeySettings(directory=str(keys), linkage_env="-", vault_env="-",
                                             pseudonym_env="-", transport_env="-"))
        started = time.perf_counter()
        copied = csv_to_parquet(spark, landing, scratch / "copy")
        copy_s = time.perf_counter() - started
        started = time.perf_counter()
        with stage_seconds() as stages:
            result = ingest(spark, open_store(spark), settings, str(landing), str(scratch / "warehouse"))
        ingest_s = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    read = sum(c["read"] for c in result.counts.values())
    return {
        f"{prefix}.rows": read,
        f"{prefix}.copy_rows_per_s": round(copied / copy_s),
        f"{prefix}.ingest_seconds": round(ingest_s, 1),
        f"{prefix}.ingest_rows_per_s": round(read / ingest_s),
        f"{prefix}.ingest_vs_copy": round(copy_s / ingest_s, 3),
        f"{prefix}.target_ingest_vs_copy": ">= 0.5",
        # plan, parse (building the plans), count (parse, validate, cache: the first pass),
        # write (seven tables), purge; the rest is the ledger and the quality summary
        **{f"{prefix}.stage.{name}_seconds": round(s, 1) for name, s in stages.items()},
        **({f"{prefix}.synth_seconds": round(generated, 1)} if generated else {}),
    }
