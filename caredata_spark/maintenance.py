"""Table upkeep for operators: compact small files, delete unreferenced ones, trim the log.

Each ingest and link run appends a few files to each table, so a year of daily runs leaves
thousands of small files per table, and every file is a task and a footer to read. Replaced
files (compaction's, a purge's) stay on disk for time travel until a vacuum deletes them;
a job killed mid-write leaves staged files no log names. `caredata maintain` handles all
three, table by table, between pipeline runs:

1. compaction (rows and their order unchanged, a commit that changes no data);
2. vacuum of the files no version of the retention window reads (7 days by default; at
   least a day, so no run or reader in progress loses a file it is about to read);
3. removal of writes abandoned for as long, then a log checkpoint and the deletion of log
   entries past the table's log retention (30 days by default): the log is where old
   commits' file statistics live.

Maintained too: `publish/cells/<table>` of each configured table with a period dimension,
which every publication rewrites whole (its versions' cells), so its old files pile up.

Left alone, on purpose:
- green tables: each version a publication recorded is that publication's archive
  (`publications.latest_publication` reads them by version), and they hold no personal data;
- the audit trail and the publications ledger: their history of appends only is evidence,
  and they are small.
"""

from __future__ import annotations

import argparse
from typing import Any

from caredata_spark.cli import Command, Context
from caredata_spark.errors import UsageError
from caredata_spark.observability import get_logger, stage
from caredata_spark.publication_tables import Publication, load_publication
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import (
    AUDIT,
    DATA_QUALITY,
    DATASETS,
    IDENTITY_VAULT,
    INGEST_RUNS,
    LINK_MAP,
    LINKAGE_INPUTS,
    LINKAGE_REPORT,
    LINKAGE_RUNS,
    METRICS,
    OBJECTIONS,
    PERSONS,
    PIPELINE_RUNS,
    PUBLICATIONS,
    QUARANTINE,
    RELEASE_RISK,
    SUBMISSIONS,
    clinical,
    green,
    publication_cells,
    table_path,
)

LOG = get_logger("maintenance")

MAINTAINED = (
    *(clinical(dataset) for dataset in DATASETS),
    IDENTITY_VAULT,
    QUARANTINE,
    OBJECTIONS,
    SUBMISSIONS,
    INGEST_RUNS,
    DATA_QUALITY,
    LINK_MAP,
    PERSONS,
    LINKAGE_REPORT,
    LINKAGE_RUNS,
    LINKAGE_INPUTS,
    PIPELINE_RUNS,
    METRICS,
    RELEASE_RISK,
)
LEFT_ALONE = (AUDIT, PUBLICATIONS, green("*"))
DEFAULT_RETENTION_HOURS = 168  # Delta's own default
MIN_RETENTION_HOURS = 24


def maintain_table(store: DeltaStore, path: str, retention_hours: int) -> dict[str, Any]:
    """Compact, vacuum, clear abandoned writes and tidy the log of one table; its figures
    (`files_vacuumed` is None where the engine does not count)."""
    removed, added = store.compact(path)
    figures = {
        "files_compacted": removed,
        "files_written": added,
        "files_vacuumed": store.vacuum(path, retention_hours),
        "abandoned_writes": store.remove_abandoned_writes(path, retention_hours),
    }
    store.tidy_log(path)
    return figures


def maintained(publication: Publication) -> list[str]:
    """The fixed tables, and the cells of `publication`'s tables with a period dimension."""
    periodic = [
        publication_cells(name) for name, table in publication.tables.items() if table.period
    ]
    return [*MAINTAINED, *periodic]


def maintain(
    store: DeltaStore,
    warehouse: str,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    publication: Publication | None = None,
) -> dict[str, dict[str, Any]]:
    """`maintain_table` on every maintained table that exists (`maintained`, of
    `publication`, default conf/publication.yaml); figures per table."""
    if retention_hours < MIN_RETENTION_HOURS:
        raise UsageError(
            f"retention of {retention_hours} hours is too short: at least {MIN_RETENTION_HOURS}, "
            "so that no run or reader in progress loses files it is reading"
        )
    figures: dict[str, dict[str, Any]] = {}
    for table in maintained(publication or load_publication()):
        path = table_path(warehouse, table)
        if store.exists(path):
            with stage(LOG, "maintain.table", table=table) as metrics:
                figures[table] = maintain_table(store, path, retention_hours)
                metrics.update(figures[table])
    return figures


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention-hours",
        type=int,
        default=DEFAULT_RETENTION_HOURS,
        help=f"keep the files of the versions of this many hours (default {DEFAULT_RETENTION_HOURS}, "
        f"at least {MIN_RETENTION_HOURS}): time travel reaches no further afterwards",
    )


def _run(context: Context, args: argparse.Namespace) -> None:
    figures = maintain(context.store, context.require("warehouse"), args.retention_hours)
    print(f"maintain: {len(figures)} table(s); left alone: {', '.join(LEFT_ALONE)}")
    print(f"  {'compacted':>10} {'written':>8} {'vacuumed':>9} {'abandoned':>9}  table")
    for table, row in figures.items():
        vacuumed = "-" if row["files_vacuumed"] is None else row["files_vacuumed"]
        print(
            f"  {row['files_compacted']:>10} {row['files_written']:>8} {vacuumed:>9} "
            f"{row['abandoned_writes']:>9}  {table}"
        )


COMMAND = Command(
    name="maintain",
    help="compact small files, vacuum unreferenced ones and tidy the logs of the warehouse's tables",
    add_arguments=_arguments,
    run=_run,
)
