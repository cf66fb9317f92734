"""Synthetic landing zones for benchmarks, generated once per size and seed and cached.

The cache lives in bench/cache/ (git-ignored); delete it to regenerate.
"""

from __future__ import annotations

import time
from pathlib import Path

from pyspark.sql import SparkSession

from caredata_spark.storage import open_store
from caredata_spark.synthetic.generate import generate
from caredata_spark.synthetic.settings import load_synth_settings

CACHE = Path(__file__).resolve().parent / "cache"
SEED = 20141


def cache_root(people: int) -> Path:
    return CACHE / f"people-{people}-seed-{SEED}"


def synthetic_landing(spark: SparkSession, people: int) -> tuple[Path, Path, float | None]:
    """(landing, truth, seconds to generate or None when cached) for `people` people."""
    root = cache_root(people)
    landing, truth = root / "landing", root / "truth"
    if (root / ".complete").exists():
        return landing, truth, None
    started = time.perf_counter()
    settings = load_synth_settings({}, people=people, seed=SEED)
    generate(spark, open_store(spark), settings, str(landing), str(truth))
    (root / ".complete").touch()
    return landing, truth, time.perf_counter() - started
