"""`make bench`: run every benchmark in one Spark session and print one table.

Figures also go to bench/results/latest.json (git-ignored). Select benches with
`python -m bench storage synth ...`; sizes with --rows / --people.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from caredata_spark.config import SparkSettings
from caredata_spark.session import build_session

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def _storage(spark: Any, args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_storage import run

    return run(spark, rows=args.rows)


BENCHES = {"storage": _storage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benches", nargs="*", default=list(BENCHES), choices=[[], *BENCHES])
    parser.add_argument("--rows", type=int, default=5_000_000, help="storage bench rows")
    args = parser.parse_args()
    spark = build_session(SparkSettings(app_name="caredata-bench", driver_memory="8g"))
    figures: dict[str, Any] = {"machine": f"{platform.machine()} {platform.python_version()}",
                               "spark": spark.version, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
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
