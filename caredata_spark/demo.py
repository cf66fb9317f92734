"""`make demo`: the whole pipeline on built-in synthetic data, then where to look."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from caredata_spark.cli import main as caredata
from caredata_spark.config import DEFAULT_CONF


def demo_conf(root: Path) -> Path:
    """The demo's own configuration: conf/local.yaml with paths under the demo folder."""
    settings = yaml.safe_load(DEFAULT_CONF.read_text(encoding="utf-8"))
    settings.update(landing=str(root / "landing"), warehouse=str(root / "warehouse"))
    settings["keys"] = {**settings.get("keys", {}), "directory": str(root / "keys")}
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


# what a demo run generates under its folder (keys are kept and reused)
GENERATED = ("landing", "truth", "warehouse", "publication")


def clear_previous(root: Path) -> list[str]:
    """Remove what an earlier demo generated in `root`, so `make demo` can run again.

    Only in a folder an earlier demo made (it holds the demo's `demo.yaml`), and only the
    folders the demo itself writes: synth refuses to write over a landing zone.
    """
    if not (root / "demo.yaml").is_file():
        return []
    removed = [name for name in GENERATED if (root / name).exists()]
    for name in removed:
        shutil.rmtree(root / name)
    return removed


def steps(root: Path, people: int) -> list[list[str]]:
    conf = ["--conf", str(demo_conf(root))]
    keys = root / "keys"
    generate = [] if (keys / "transport.pub").exists() else [["keys", "generate", "--dir", str(keys)]]
    commands = [
        *generate,
        ["synth", "--people", str(people), "--seed", "42", "--truth", str(root / "truth")],
        ["run"],
    ]
    return [[*conf, *command] for command in commands]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo", help="folder for the demo's data (default demo)")
    parser.add_argument("--people", type=int, default=20_000)
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    removed = clear_previous(root)
    if removed:
        print(f"removed the previous demo's {', '.join(removed)} in {root}", flush=True)
    for step in steps(root, args.people):
        print(f"\n== caredata {' '.join(step)}", flush=True)
        code = caredata(step)
        if code != 0:
            return code
    print(
        f"\nDemo finished. Look at:\n"
        f"  {root / 'landing'}      synthetic submissions (CSV per dataset and submitter)\n"
        f"  {root / 'warehouse'}    Delta tables: clinical/, identity/vault, quarantine, ingest/, linkage/\n"
        f"  {root / 'truth'}        ground truth of the synthetic data\n"
        f"  {root / 'publication' / 'index.html'}   the publication site (green tables)\n"
        f"  caredata info --warehouse {root / 'warehouse'}   lists the tables and versions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
