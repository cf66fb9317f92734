"""The publications ledger: which version of each green table belongs to which publication.

Delta commits one table at a time, so the green tables alone cannot say which of them
belong together: a publication that fails after writing three of six tables leaves three
new versions beside three old ones. The ledger's one commit per publication, made after
every table of it is written, is what turns them into a set. Readers who need the tables
as published read them through `latest_publication`, which time-travels each table to the
version the last complete publication wrote, and never see a half-made set.

Green tables are never vacuumed by the platform (they hold no personal data,
`caredata maintain` leaves them alone, and their `ARCHIVE_PROPERTIES` make every vacuum
refuse them), so each recorded version stays readable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from caredata_spark.errors import UsageError
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import PUBLICATIONS, green, publication_cells, table_path

LEDGER = (
    "publication long, reference_date date, table string, status string, version long, "
    "cells long, primary long, secondary long"
)
PUBLISHED, WITHHELD = "published", "withheld"


def next_number(store: DeltaStore, warehouse: str) -> int:
    """1 for the first publication, then one more than the last (a few rows per publication)."""
    path = table_path(warehouse, PUBLICATIONS)
    if not store.exists(path):
        return 1
    last = store.read(path).agg(F.max("publication")).first()
    return (last[0] or 0) + 1 if last else 1


def record_publication(
    store: DeltaStore,
    warehouse: str,
    number: int,
    reference: dt.date,
    versions: Mapping[str, int],
    summaries: Mapping[str, Mapping[str, int]],
    withheld: Iterable[str],
) -> None:
    """Commit one publication in one ledger commit: a row per table, a withheld table's
    without version or counts."""
    published = [
        (number, reference, name, PUBLISHED, version,
         *(summaries[name][k] for k in ("cells", "primary", "secondary")))
        for name, version in versions.items()
    ]
    refused = [(number, reference, name, WITHHELD, None, None, None, None) for name in withheld]
    rows = store.spark.createDataFrame(published + refused, LEDGER).withColumn("published_at", F.current_timestamp())
    store.write(rows, table_path(warehouse, PUBLICATIONS))


def published_cells(store: DeltaStore, warehouse: str, table: str) -> DataFrame | None:
    """The rows of `publish/cells/<table>` of publications the ledger records as having
    published `table` (a failed publication's rows are left out), or None if there are none
    yet. Cells of a table, a version per publication: no population-sized data."""
    path = table_path(warehouse, publication_cells(table))
    ledger = table_path(warehouse, PUBLICATIONS)
    if not (store.exists(path) and store.exists(ledger)):
        return None
    published = (
        store.read(ledger)
        .where((F.col("table") == table) & (F.col("status") == PUBLISHED))
        .select("publication")
    )
    return store.read(path).join(F.broadcast(published), on="publication", how="left_semi")


def latest_publication(store: DeltaStore, warehouse: str) -> dict[str, DataFrame]:
    """Each table of the last complete publication, read at the version it published
    (a table withheld that time is absent, as it is from that publication's site)."""
    path = table_path(warehouse, PUBLICATIONS)
    if not store.exists(path):
        raise UsageError(f"no publication in {warehouse}: run `caredata publish` first")
    ledger = store.read(path)
    last = ledger.agg(F.max("publication")).first()[0]  # type: ignore[index]
    tables = (
        ledger.filter((F.col("publication") == last) & (F.col("status") == PUBLISHED))
        .select("table", "version")
        .collect()  # one row per table
    )
    return {
        row["table"]: store.read(table_path(warehouse, green(row["table"])), version=row["version"])
        for row in sorted(tables, key=lambda r: r["table"])
    }
