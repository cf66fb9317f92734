"""`make bench`: every benchmark in one Spark session, printed as one table.

Figures also go to bench/results/latest.json (git-ignored). Select benches by name, e.g.
`python -m bench storage ingest --people 100000`; synthetic landing zones are generated
once per size and cached in bench/cache/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from caredata_spark.config import SparkSettings
from caredata_spark.session import build_session

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
Bench = Callable[[SparkSession, argparse.Namespace], dict[str, Any]]


def _per_size(module: str, **fixed: Any) -> Bench:
    """A bench whose `run(spark, people)` is repeated for every --people size."""

    def bench(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
        run = importlib.import_module(module).run
        figures: dict[str, Any] = {}
        for people in args.people:
            figures.update(run(spark, people, **fixed))
        return figures

    return bench


def _storage(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_storage import run

    return run(spark, rows=args.rows)


def _envelope(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_envelope import run

    return run(spark, rows=args.rows)


def _release(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_release import run

    return run(spark, rows=args.rows, people=max(args.people))


def _linkage(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_linkage import across_sizes

    return across_sizes(spark, args.people)


def _pipeline(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_pipeline import across_sizes

    return across_sizes(spark, args.people)


BENCHES: dict[str, Bench] = {
    "synth": _per_size("bench.bench_synth"),
    "storage": _storage,
    "envelope": _envelope,
    "ingest": _per_size("bench.bench_ingest"),
    "release": _release,
    "publish": _per_size("bench.bench_publish"),
    "pipeline": _pipeline,
    "linkage": _linkage,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benches", nargs="*", help=f"any of {', '.join(BENCHES)} (default all)")
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the row-level benches")
    parser.add_argument(
        "--people", type=int, nargs="+", default=[100_000, 1_000_000], help="synthetic population sizes"
    )
    args = parser.parse_args()
    unknown = [b for b in args.benches if b not in BENCHES]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    spark = build_session(SparkSettings(app_name="caredata-bench", driver_memory="8g"))
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "spark": spark.version,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for name in args.benches or BENCHES:
        started = time.perf_counter()
        figures.update(BENCHES[name](spark, args))
        figures[f"{name}.bench_seconds"] = round(time.perf_counter() - started, 1)
    width = max(len(k) for k in figures)
    print("\ncaredata-spark benchmark")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2))
    print(f"\n(written to {RESULTS})")


if __name__ == "__main__":
    main()
