"""Synthetic data generation: people/s and rows/s, landing zone and truth written.

Always generates afresh (never from the cache) into a scratch folder; when the cache lacks
that size, the fresh run becomes the cache entry, so later benches do not generate again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.data import SEED, cache_root
from caredata_spark.storage import open_store
from caredata_spark.synthetic.generate import generate
from caredata_spark.synthetic.settings import load_synth_settings


def run(spark: SparkSession, people: int) -> dict[str, Any]:
    cache_root(people).parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-synth-", dir=cache_root(people).parent))
    prefix = f"synth.{people}"
    try:
        settings = load_synth_settings({}, people=people, seed=SEED)
        started = time.perf_counter()
        result = generate(spark, open_store(spark), settings, str(scratch / "landing"), str(scratch / "truth"))
        seconds = time.perf_counter() - started
        landing_bytes = sum(p.stat().st_size for p in (scratch / "landing").rglob("*") if p.is_file())
        if not (cache_root(people) / ".complete").exists():
            shutil.rmtree(cache_root(people), ignore_errors=True)
            scratch.rename(cache_root(people))
            (cache_root(people) / ".complete").touch()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = sum(result.rows.values())
    return {
        f"{prefix}.seconds": round(seconds, 1),
        f"{prefix}.rows": rows,
        f"{prefix}.files": result.files,
        f"{prefix}.landing_mb": round(landing_bytes / 2**20),
        f"{prefix}.people_per_s": round(people / seconds),
        f"{prefix}.rows_per_s": round(rows / seconds),
    }
