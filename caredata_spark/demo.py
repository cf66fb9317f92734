"""`make demo`: the whole pipeline on built-in synthetic data, then where to look."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caredata_spark.cli import main as caredata


def steps(root: Path, people: int) -> list[list[str]]:
    landing, warehouse = root / "landing", root / "warehouse"
    common = ["--landing", str(landing), "--warehouse", str(warehouse)]
    return [
        ["info", *common],
    ]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo", help="folder for the demo's data (default demo)")
    parser.add_argument("--people", type=int, default=20_000)
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    for step in steps(root, args.people):
        print(f"\n== caredata {' '.join(step)}", flush=True)
        code = caredata(step)
        if code != 0:
            return code
    print(f"\nDemo finished. Data under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
