"""`caredata info`: what this installation would run with, for operators checking a deploy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from caredata_spark.cli import Command, Context
from caredata_spark.session import delta_connector_available


def delta_tables(root: str) -> list[str]:
    """Table paths (relative to the warehouse) found under a local warehouse root."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(str(log.parent.relative_to(base)) for log in base.rglob("_delta_log"))


def run(context: Context, args: argparse.Namespace) -> None:
    spark = context.spark
    store = context.store
    report = {
        "spark_version": spark.version,
        "master": spark.sparkContext.master,
        "delta_connector": delta_connector_available(spark),
        "storage_backend": store.name,
        "landing": context.settings.landing,
        "warehouse": context.settings.warehouse,
        "tables": {
            name: store.version(f"{context.settings.warehouse}/{name}")
            for name in delta_tables(context.settings.warehouse or "")
        },
    }
    print(json.dumps(report, indent=2))


COMMAND = Command(
    name="info",
    help="show the Spark master, Delta backend and warehouse tables this setup uses",
    add_arguments=lambda parser: None,
    run=run,
)
