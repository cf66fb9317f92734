"""`caredata link`: link the warehouse's new GP and hospital records to persons."""

from __future__ import annotations

import argparse
import json

from caredata_spark.cli import Command, Context
from caredata_spark.linkage.job import link
from caredata_spark.linkage.settings import linkage_settings


def run(context: Context, args: argparse.Namespace) -> None:
    warehouse = context.require("warehouse")
    settings = linkage_settings(context.settings.linkage)
    summary = link(context.spark, context.store, warehouse, settings)
    print(json.dumps(summary, indent=2, sort_keys=True))


COMMAND = Command(
    name="link",
    help="link new GP and hospital records to persons (linkage/link_map, persons, report)",
    add_arguments=lambda parser: None,
    run=run,
)
