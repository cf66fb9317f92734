"""Erasure of a type 1 objector's GP rows that earlier runs had already stored.

Ingest drops a type 1 objector's GP rows at the door, but a dissent can arrive after the
patient's rows did. Then every table holding GP rows or identifiers of that record key
loses them, in the same ingest run, before its ledger row: the clinical GP tables, the
identity vault, the quarantine (rejected GP lines of the key), the link map's `gp` row and
the person index rows only that key contributed. Objection events stay: they hold no
identifier and keep the objection enforced. A later withdrawal brings nothing back; the
practice sends the record again.

Scale: objectors are a few percent of the population, but new ones per run are few. Ingest
purges only keys whose dissent arrived in that run, and `DeltaStore.delete_keys` rewrites
only the data files holding them. Each table is then vacuumed with zero retention, because
the old versions' files still hold the rows: erasure must be physical, not just invisible.
The Delta log, which vacuum keeps, never names a record key (`storage.UNSTATED_COLUMNS`).

`caredata purge` sweeps every standing objector instead: for warehouses whose dissents
were stored before ingest erased earlier rows, or tables restored from a backup. With all
objectors as keys it rewrites most GP data files at national scale: an operator's action,
not a scheduled step.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from caredata_spark import audit
from caredata_spark.cli import Command, Context
from caredata_spark.linkage.persons import ORIGIN_GP
from caredata_spark.linkage.records import GP, with_signature
from caredata_spark.objections import objection_history, type1_objectors
from caredata_spark.observability import get_logger, stage
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import IDENTITY_VAULT, LINK_MAP, PERSONS, QUARANTINE, clinical, table_path

LOG = get_logger("purge")

GP_DATASETS = ("gp_patients", "gp_events")
GP_PATIENTS = clinical("gp_patients")


def newly_objecting(objectors: DataFrame, new_events: DataFrame) -> DataFrame:
    """Record keys whose type 1 dissent is in force and was (re)stated in this run's events.

    Keys that objected in earlier runs were purged then; a resumed run recomputes the same
    keys from the same files. Both inputs are small (this run's events; objectors are
    keyed), a shuffle semi join on the key.
    """
    stated = new_events.filter(F.col("objection_type") == 1).select("record_key")
    return objectors.select("record_key").join(stated, on="record_key", how="left_semi").distinct()


def with_literal(column: str, value: str) -> Callable[[DataFrame], DataFrame]:
    """Keys plus a constant match column, e.g. the link map's `source`."""

    def transform(keys: DataFrame) -> DataFrame:
        return keys.withColumn(column, F.lit(value))

    return transform


def in_gp_datasets(keys: DataFrame) -> DataFrame:
    """Keys once per GP dataset: quarantine rows match on (dataset, record_key)."""
    return keys.select("record_key", F.explode(F.array(*[F.lit(d) for d in GP_DATASETS])).alias("dataset"))


def identities_of(keys: DataFrame, gp_patients: DataFrame, link_map: DataFrame) -> DataFrame:
    """(person_id, origin, signature) of the person index rows only the purged keys gave.

    A person with other GP registrations (another practice) keeps the identities those
    registrations share. The purged keys are few: semi joins on record_key against the GP
    registrations and GP links (shuffles AQE turns into broadcasts of the keys), then only
    the touched persons' other registrations are read.
    """
    links = link_map.filter(F.col("source") == GP).select("record_key", "person_id")
    gave = (
        gp_patients.join(keys, on="record_key", how="left_semi")
        .transform(with_signature)
        .join(links, on="record_key", how="inner")  # one link per GP key
        .select("person_id", "signature")
    )
    others = links.join(gave.select("person_id").distinct(), on="person_id", how="left_semi").join(
        keys, on="record_key", how="left_anti"
    )
    still_given = (
        gp_patients.join(others, on="record_key", how="inner")  # few touched persons' keys
        .transform(with_signature)
        .select("person_id", "signature")
    )
    return (
        gave.join(still_given, on=["person_id", "signature"], how="left_anti")
        .distinct()
        .withColumn("origin", F.lit(ORIGIN_GP))
    )


def purge_targets(store: DeltaStore, warehouse: str, keys: DataFrame) -> list[tuple[str, DataFrame]]:
    """(table, match keys) in erasure order: the person index first, as it is found through
    the link map and GP registrations, which go next; a run resumed after a failure part-way
    finds the earlier tables already clean."""
    targets: list[tuple[str, DataFrame]] = []
    if all(store.exists(table_path(warehouse, t)) for t in (PERSONS, LINK_MAP, GP_PATIENTS)):
        persons = identities_of(
            keys, store.read(table_path(warehouse, GP_PATIENTS)), store.read(table_path(warehouse, LINK_MAP))
        )
        # materialised: the tables it is computed from are rewritten and vacuumed below
        targets.append((PERSONS, persons.localCheckpoint(eager=True)))
    targets.append((LINK_MAP, keys.transform(with_literal("source", GP))))
    targets += [(clinical(d), keys) for d in GP_DATASETS]
    targets.append((IDENTITY_VAULT, keys.transform(with_literal("source", GP))))
    targets.append((QUARANTINE, keys.transform(in_gp_datasets)))
    return targets


def purge_type1(store: DeltaStore, warehouse: str, keys: DataFrame, requester: str) -> dict[str, int]:
    """Erase every stored GP row of `keys` (record_key) and return rows erased per table.

    Idempotent: keys already erased match nothing. Every target table is vacuumed, even
    when nothing matched this time, so a run that failed between erasing and vacuuming
    still leaves no old file behind once resumed. An erasure with keys to look for is in the
    audit trail (`erasure`: started, then done with the rows erased per table, or failed);
    the trail names tables and counts, never a key.
    """
    keys = keys.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if keys.isEmpty():
            return {}
        started = audit.now()
        entry = audit.AuditEntry(
            at=started, action=audit.ERASURE, outcome=audit.STARTED, requester=requester,
            release_id=audit.request_id(started, prefix="erasure-"),
        )
        purged = {}
        with audit.audited(store.spark, store, warehouse, entry):
            for table, matches in purge_targets(store, warehouse, keys):
                purged[table] = store.delete_keys(table_path(warehouse, table), matches)
                store.vacuum(table_path(warehouse, table), retention_hours=0)
        done = audit.stamped(
            entry, outcome=audit.DONE, fields=[f"{t}={n}" for t, n in purged.items()], rows=sum(purged.values())
        )
        audit.record(store.spark, store, warehouse, done)
        return purged
    finally:
        keys.unpersist()


def standing_objectors(store: DeltaStore, warehouse: str) -> DataFrame:
    """Record keys whose type 1 dissent is in force, from every run's objection events."""
    return type1_objectors(objection_history(store, warehouse))


def sweep(store: DeltaStore, warehouse: str, requester: str = "caredata purge") -> dict[str, int]:
    """Erase every stored GP row of every standing type 1 objector; rows erased per table."""
    with stage(LOG, "purge.sweep", warehouse=warehouse) as metrics:
        purged = purge_type1(store, warehouse, standing_objectors(store, warehouse), requester)
        metrics.update(purged_rows=purged)  # counts per table only
    return purged


def _run(context: Context, args: argparse.Namespace) -> None:
    purged = sweep(context.store, context.require("warehouse"), args.requester)
    print(f"purge: {sum(purged.values())} stored GP row(s) of standing type 1 objectors erased")
    for table, rows in purged.items():
        print(f"  {rows:>10}  {table}")


COMMAND = Command(
    name="purge",
    help="erase every stored GP row of every patient whose type 1 objection is in force (a sweep)",
    add_arguments=lambda parser: parser.add_argument(
        "--requester", default="caredata purge", help="who runs the sweep (audited; default: caredata purge)"
    ),
    run=_run,
)
