"""One linkage run: link the records of the submissions not linked yet, keep every old id.

Order within a run (each record is linked once, by the first part that can):
1. GP registrations (`persons.register_gp`): new GP record keys join or found persons.
2. Hospital records whose valid NHS number no person owns found hospital-only persons,
   unless their records link deterministically to one person, who adopts the number.
3. Every other new hospital record: the 8 deterministic steps, then the scored step,
   against the person index (earlier runs + steps 1 and 2).

Incremental and restartable:
- `linkage/runs` is the ledger of submission ids consumed per run; a run reads only rows of
  other submissions (an anti-join against the ledger, which has one row per file and is
  broadcast by Spark's size threshold). Record keys already in the link map (a GP record in
  a later extract, a hospital episode resubmitted) keep their person and get no new row.
- `linkage/inputs` is the run's plan, committed before anything else: the submissions it
  links and the version of each clinical table it read. The next run reads only the files
  added since (`DeltaStore.read_added`), so a month's run does not rescan years of hashes;
  the ledger's anti-join still decides which rows are new.
- Run n reads the link map and person index as left by runs < n and commits every table
  with the Delta transaction (caredata-link, n). A run that died part-way is re-run with the
  same n and links exactly the submissions its plan names, not those ingested since, so it
  recomputes the same result (ids are derived, EM is deterministic) and the tables it skips
  as already committed agree with the ones it writes. The ledger is written last, so the
  link map never shows a run the ledger does not know to be complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from caredata_spark.linkage import report as reporting
from caredata_spark.linkage.deterministic import KEYS_PER_SIGNATURE as RULE_KEYS, link_deterministic, person_numbers
from caredata_spark.linkage.persons import (
    GP_REGISTRATION,
    PERSON_COLUMNS,
    adopted_numbers,
    found_hes_persons,
    gp_identities,
    nhs_owners,
    register_gp,
    with_adopters,
)
from caredata_spark.linkage.records import GP, IDENTITY_COLUMNS, identities, read_records, with_signature
from caredata_spark.linkage.scoring import link_scored
from caredata_spark.linkage.settings import LinkageSettings
from caredata_spark.observability import get_logger, log_event, stage
from caredata_spark.storage import DeltaStore, Txn
from caredata_spark.tables import LINK_MAP, LINKAGE_INPUTS, LINKAGE_REPORT, LINKAGE_RUNS, PERSONS, table_path

APP_ID = "caredata-link"

IDENTITY_DDL = (
    "h_nhs binary, h_nhs_del array<binary>, h_sex binary, h_dob binary, h_dob_swap binary, "
    "h_dob_ym binary, h_dob_yd binary, h_dob_md binary, dob_jan1 boolean, h_postcode binary, "
    "h_district binary, communal boolean"
)
LINK_MAP_DDL = (
    "source string, record_key string, person_id string, match_step string, "
    "match_weight double, run int"
)
PERSONS_DDL = f"person_id string, origin string, signature binary, {IDENTITY_DDL}, run int"
RUNS_DDL = "run int, source string, submission_id string"
INPUTS_DDL = "run int, source string, submission_id string, version long"


@dataclass(frozen=True)
class State:
    """The tables as earlier runs left them, and the number of this run."""

    run: int
    consumed: DataFrame  # submission_id of every row already linked
    link_map: DataFrame
    persons: DataFrame
    report: DataFrame
    since: dict[str, int]  # source -> the version of its clinical table an earlier run read
    planned: DataFrame | None  # source, submission_id planned by an attempt of this run that died


def _earlier(store: DeltaStore, spark: SparkSession, path: str, ddl: str, run: int) -> DataFrame:
    if not store.exists(path):
        return spark.createDataFrame([], ddl)
    return store.read(path).filter(F.col("run") < run)


def load_state(spark: SparkSession, store: DeltaStore, warehouse: str) -> State:
    runs_path = table_path(warehouse, LINKAGE_RUNS)
    last = store.read(runs_path).agg(F.max("run")).first()[0] if store.exists(runs_path) else None
    run = (last or 0) + 1
    inputs_path = table_path(warehouse, LINKAGE_INPUTS)
    inputs = store.read(inputs_path) if store.exists(inputs_path) else spark.createDataFrame([], INPUTS_DDL)
    planned = inputs.filter(F.col("run") == run).select("source", "submission_id")
    return State(
        run=run,
        consumed=_earlier(store, spark, runs_path, RUNS_DDL, run).select("submission_id"),
        link_map=_earlier(store, spark, table_path(warehouse, LINK_MAP), LINK_MAP_DDL, run),
        persons=_earlier(store, spark, table_path(warehouse, PERSONS), PERSONS_DDL, run),
        report=_earlier(store, spark, table_path(warehouse, LINKAGE_REPORT), reporting.REPORT_DDL, run),
        since=_versions_read(inputs.filter(F.col("run") < run)),
        planned=None if planned.isEmpty() else planned,
    )


def _versions_read(inputs: DataFrame) -> dict[str, int]:
    """Per source, the version of its table the latest earlier run read (one row each)."""
    latest = inputs.groupBy("source").agg(F.max_by("version", "run").alias("version"))
    return {row["source"]: row["version"] for row in latest.collect()}


def _to_link(records: DataFrame, state: State) -> DataFrame:
    """Rows of the submissions no earlier run consumed; on a retry, exactly those its plan
    names, not those ingested since the attempt died."""
    if state.planned is None:
        return records.join(state.consumed, on="submission_id", how="left_anti")
    return records.join(state.planned.select("submission_id"), on="submission_id", how="left_semi")


def _plan(spark: SparkSession, run: int, submissions: Sequence[Row], versions: dict[str, int]) -> DataFrame:
    """`linkage/inputs` rows of a run: its submissions, each with the version read of its table."""
    rows = [(run, s["source"], s["submission_id"], versions[s["source"]]) for s in submissions]
    return spark.createDataFrame(rows, INPUTS_DDL)


def materialised(frame: DataFrame) -> DataFrame:
    """Compute `frame` now and cut its lineage, for a result later steps build on.

    Caching is not enough: each action re-analyses the whole logical plan built so far, and
    on this job's chain of joins that grows to minutes per action and then out of memory.
    Local checkpoints live in the executors' block managers (memory, spilling to disk); an
    executor lost mid-run fails the run, which is then simply re-run (see above).
    """
    return frame.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)


OUTCOME_DDL = (
    "signature binary, person_id string, match_step string, match_weight double, "
    "best_weight double, ambiguous_step string"
)


def _outcome_part(frame: DataFrame, order: int) -> DataFrame:
    """A part's results in the common outcome layout, tagged with the part's order."""
    fields = [field.split() for field in OUTCOME_DDL.split(", ")]
    return frame.select(
        *[
            (F.col(name) if name in frame.columns else F.lit(None)).cast(kind).alias(name)
            for name, kind in fields
        ],
        F.lit(order).alias("part"),
    )


def signature_outcomes(*parts: DataFrame) -> DataFrame:
    """One row per signature from the parts' results, in part order; at most one part links.

    The ambiguity kept is the earliest part's (a record ambiguous at det_6 and then linked
    by its score reports det_6).
    """
    merged = reduce(DataFrame.unionByName, [_outcome_part(p, n) for n, p in enumerate(parts)])
    earliest_ambiguity = F.min(
        F.when(F.col("ambiguous_step").isNotNull(), F.struct("part", "ambiguous_step"))
    )
    return merged.groupBy("signature").agg(
        F.max("person_id").alias("person_id"),
        F.max("match_step").alias("match_step"),
        F.max("match_weight").alias("match_weight"),
        F.max("best_weight").alias("best_weight"),
        earliest_ambiguity["ambiguous_step"].alias("ambiguous_step"),
    )


def link(
    spark: SparkSession, store: DeltaStore, warehouse: str, settings: LinkageSettings
) -> dict[str, Any]:
    """Run linkage once over the warehouse; returns the run's summary (counts only)."""
    logger = get_logger("linkage")
    state = load_state(spark, store, warehouse)
    with stage(logger, "linkage_input", run=state.run) as metrics:
        records, versions = read_records(store, warehouse, state.since)
        signed = _to_link(with_signature(records), state)
        # apart, so GP steps never scan hospital rows (nor hospital steps GP rows); the
        # filters prune the union's branches, so each table is still read once
        gp_rows = materialised(signed.filter(F.col("source") == GP))
        hes_all = materialised(signed.filter(F.col("source") != GP))
        rows = gp_rows.unionByName(hes_all)
        # one row per submission file read, never per record: the plan, the ledger and counts
        submissions = rows.groupBy("source", "submission_id").count().collect()
        per_source: Counter[str] = Counter()
        for submission in submissions:
            per_source[submission["source"]] += submission["count"]
        metrics.update(per_source, retry=state.planned is not None)
    txn = Txn(APP_ID, state.run)
    ledger_path = table_path(warehouse, LINKAGE_RUNS)
    if not per_source:
        if state.planned is not None:  # erasure took every row it planned: close the run
            closed = state.planned.select(F.lit(state.run).alias("run"), "source", "submission_id")
            store.write(closed, ledger_path, txn=txn)
        log_event(logger, "linkage_nothing_new", run=state.run)
        return {"run": None, "new_rows": 0}
    plan = _plan(spark, state.run, submissions, versions)
    store.write(plan, table_path(warehouse, LINKAGE_INPUTS), txn=txn)

    with stage(logger, "persons", run=state.run):
        # earlier links of this batch's keys: a semi-join keeps the shuffle to batch size
        batch_keys = rows.select("source", "record_key").distinct()
        prior_links = state.link_map.join(batch_keys, on=["source", "record_key"], how="left_semi")
        gp_persons = materialised(register_gp(gp_rows, prior_links, nhs_owners(state.persons)))
        gp_index = materialised(gp_identities(gp_rows, gp_persons))  # read three times below
        # the anti-join moves keys only; identities come from one dedup of the wide rows
        hes_rows = hes_all.select("source", "record_key", "provider", "signature").join(
            prior_links.select("source", "record_key"), on=["source", "record_key"], how="left_anti"
        )
        batch_identities = identities(hes_all)
        if state.run > 1:  # only signatures of keys not linked before (run 1 has no earlier links)
            batch_identities = batch_identities.join(hes_rows.select("signature"), on="signature", how="left_semi")
        hes_signatures = materialised(batch_identities)
        known_index = state.persons.unionByName(gp_index.withColumn("run", F.lit(state.run)))
        unowned = materialised(found_hes_persons(hes_signatures, nhs_owners(known_index)))
        adopted = adopted_numbers(
            unowned,
            known_index.select("person_id", "signature", *IDENTITY_COLUMNS),
            broadcast_founders=settings.broadcasts(unowned.count() * RULE_KEYS),
        )
        founders = materialised(unowned.transform(with_adopters(adopted)))
        new_index = materialised(
            gp_index.unionByName(founders.select(*gp_index.columns))
            .join(state.persons.select("person_id", "signature"), on=["person_id", "signature"], how="left_anti")
            .withColumn("run", F.lit(state.run))
            .select(*PERSON_COLUMNS)
        )
        reference = materialised(
            state.persons.unionByName(new_index).select("person_id", "signature", *IDENTITY_COLUMNS)
        )
        to_link = materialised(
            hes_signatures.join(founders.select("signature"), on="signature", how="left_anti")
        )

    with stage(logger, "deterministic_steps", run=state.run):
        numbers = materialised(person_numbers(reference))  # both steps check persons' numbers
        deterministic = materialised(link_deterministic(to_link, reference, numbers=numbers))
    with stage(logger, "scored_step", run=state.run) as metrics:
        known = deterministic.filter(F.col("person_id").isNotNull()).select("signature", "person_id")
        earlier_fit = reporting.fitted_parameters(state.report)
        scored, fit = link_scored(to_link, known, reference, settings, state.run, earlier_fit, numbers)
        by_signature = signature_outcomes(
            founders.select("signature", "person_id", "match_step"),
            deterministic,
            scored,
        )
        outcomes = materialised(
            record_outcomes(hes_rows, by_signature).unionByName(_gp_outcomes(gp_rows, gp_persons))
        )
        metrics.update(fit.figures())

    link_rows = outcomes.select(
        "source", "record_key", "person_id", "match_step", "match_weight", F.lit(state.run).alias("run")
    )
    founded = (  # a GP person who adopted a number has index rows of both origins: gp counts
        new_index.join(state.persons.select("person_id"), on="person_id", how="left_anti")
        .groupBy("person_id")
        .agg(F.min("origin").alias("origin"))
    )
    report = reporting.build_report(spark, outcomes, founded.select("person_id", "origin"), fit, state.run)
    ledger = plan.select("run", "source", "submission_id")
    with stage(logger, "linkage_write", run=state.run):
        store.write(new_index, table_path(warehouse, PERSONS), txn=txn)
        store.write(link_rows, table_path(warehouse, LINK_MAP), partition_by=["source"], txn=txn)
        store.write(report, table_path(warehouse, LINKAGE_REPORT), txn=txn)
        store.write(ledger, ledger_path, txn=txn)
    summary = reporting.summarise(store.read(table_path(warehouse, LINKAGE_REPORT)), state.run)
    log_event(logger, "linkage_summary", **summary)
    return summary


def record_outcomes(hes_rows: DataFrame, by_signature: DataFrame) -> DataFrame:
    """Hospital record keys with their signature's outcome, one row per key.

    A key may arrive twice in one batch (a resubmitted episode): its linked version wins,
    then the larger signature, so the choice is deterministic.
    """
    fields = ("provider", "person_id", "match_step", "match_weight", "best_weight", "ambiguous_step")
    linked_first = F.struct(F.col("person_id").isNotNull().alias("linked"), "signature", *fields)
    return (
        hes_rows.select("source", "record_key", "provider", "signature")
        .join(by_signature, on="signature", how="left")
        .groupBy("source", "record_key")
        .agg(F.max(linked_first).alias("chosen"))
        .select("source", "record_key", *[F.col("chosen")[c].alias(c) for c in fields])
    )


def _gp_outcomes(gp_rows: DataFrame, gp_persons: DataFrame) -> DataFrame:
    """New GP record keys: linked by registration (keys seen before keep their old row)."""
    providers = gp_rows.groupBy("record_key").agg(F.max("provider").alias("provider"))
    return (
        gp_persons.filter(F.col("is_new"))
        .join(providers, on="record_key", how="inner")
        .select(
            F.lit(GP).alias("source"),
            "record_key",
            "provider",
            "person_id",
            F.lit(GP_REGISTRATION).alias("match_step"),
            F.lit(None).cast("double").alias("match_weight"),
            F.lit(None).cast("double").alias("best_weight"),
            F.lit(None).cast("string").alias("ambiguous_step"),
        )
    )
