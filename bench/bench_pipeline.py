"""The whole pipeline (`caredata run`: every step in `pipeline.STEPS`) against a pure I/O
baseline, on the cached synthetic landing zone of each size.

The baseline is the least any pipeline over these files must do: read every landing CSV
(header, all columns as strings) and write it as a Delta table through the same store.
It runs first, in the same session, so both see the same machine and the same cache
state (the pipeline reads files the baseline has just read, which favours neither much:
both are dominated by Spark work, not by the disk). Seconds per pipeline step and per
logged stage come from the run itself (its metrics and its JSON stage lines).

Targets (issue 8): pipeline <= 3x the baseline; time at 1M people <= 11x time at 100k.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from bench.data import synthetic_landing
from bench.stages import stage_seconds
from caredata_spark.cli import Context
from caredata_spark.config import KeySettings, Settings
from caredata_spark.contract import DATASETS
from caredata_spark.keys import generate_keys
from caredata_spark.pipeline import run_pipeline
from caredata_spark.storage import DeltaStore, open_store
from caredata_spark.tables import table_path

RUN_DATE = dt.date(2025, 4, 1)  # the day after the synthetic data period
TARGET_VS_BASELINE = 3.0
TARGET_SCALING = 11.0  # for 10x the people


def _header(path: Path) -> str:
    with path.open(encoding="utf-8") as lines:
        return lines.readline()


def read_landing_csv(spark: SparkSession, files: Sequence[Path]) -> DataFrame:
    """One dataset's CSVs with their own headers: submitters order columns differently, so
    files are read per header and unioned by name (as ingest reads them)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for path in files:
        groups[_header(path)].append(str(path))
    frames = [spark.read.option("header", True).csv(group) for group in groups.values()]
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def io_baseline(spark: SparkSession, store: DeltaStore, landing: Path, warehouse: Path) -> int:
    """Read each dataset's landing CSVs and write them as one Delta table; rows written."""
    rows = 0
    for name in DATASETS:
        files = sorted((landing / name).glob("*/*.csv"))
        if files:
            path = table_path(str(warehouse), name)
            store.write(read_landing_csv(spark, files), path)
            rows += store.read(path).count()  # from Parquet footers, not a re-read
    return rows


def run(spark: SparkSession, people: int) -> dict[str, Any]:
    landing, _, generated = synthetic_landing(spark, people)
    store = open_store(spark)
    scratch = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    prefix = f"pipeline.{people}"
    try:
        generate_keys(scratch / "keys")
        keys = KeySettings(directory=str(scratch / "keys"), linkage_env="-", vault_env="-",
                           pseudonym_env="-", transport_env="-")
        started = time.perf_counter()
        baseline_rows = io_baseline(spark, store, landing, scratch / "baseline")
        baseline_s = time.perf_counter() - started

        context = Context(Settings(landing=str(landing), warehouse=str(scratch / "warehouse"), keys=keys))
        context.spark = spark  # this session, not one built from the settings
        with stage_seconds() as stages:
            started = time.perf_counter()
            steps = run_pipeline(context, RUN_DATE)
            pipeline_s = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = steps["ingest"]["read"]
    return {
        f"{prefix}.rows": rows,
        f"{prefix}.io_baseline_seconds": round(baseline_s, 1),
        f"{prefix}.io_baseline_rows_per_s": round(baseline_rows / baseline_s),
        **{f"{prefix}.step.{name}_seconds": figures["seconds"] for name, figures in steps.items()},
        **{f"{prefix}.stage.{name}_seconds": round(s, 1) for name, s in stages.items()},
        f"{prefix}.seconds": round(pipeline_s, 1),
        f"{prefix}.rows_per_s": round(rows / pipeline_s),
        f"{prefix}.vs_io_baseline": round(pipeline_s / baseline_s, 2),
        f"{prefix}.target_vs_io_baseline": f"<= {TARGET_VS_BASELINE}",
        **({f"{prefix}.synth_seconds": round(generated, 1)} if generated else {}),
    }


def across_sizes(spark: SparkSession, sizes: Sequence[int]) -> dict[str, Any]:
    """`run` per size, then how time grows with people between the smallest and largest."""
    figures: dict[str, Any] = {}
    for people in sizes:
        figures.update(run(spark, people))
    small, large = min(sizes), max(sizes)
    if large > small:
        key = f"pipeline.time_ratio_{large}_vs_{small}"
        figures[key] = round(figures[f"pipeline.{large}.seconds"] / figures[f"pipeline.{small}.seconds"], 2)
        target = TARGET_SCALING * (large / small) / 10
        figures[f"pipeline.target_time_ratio_{large}_vs_{small}"] = f"<= {target:g} ({large // small}x people)"
    return figures
