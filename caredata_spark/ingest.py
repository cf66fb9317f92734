"""`caredata ingest`: a landing zone in, validated Delta tables out.

Order matters for privacy: type 1 objectors' GP rows are dropped before anything is
written; identifiers are hashed (clinical tables) or encrypted (vault, quarantine) in the
same Spark plans that read them, so no table ever holds an NHS number in clear.

Order matters for safety too: every count is computed and the invariant
read = accepted + quarantined + dropped checked before the first write; each table is
written once per run under a Delta transaction id, and the ledger last (`submissions`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import reduce

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import reasons
from caredata_spark.cli import Command, Context
from caredata_spark.config import Settings
from caredata_spark.contract import DATASETS, Dataset
from caredata_spark.errors import CaredataError
from caredata_spark.identity import generalised, vault_rows, with_linkage_hashes
from caredata_spark.keyed_hash import KeyFrame, key_frame
from caredata_spark.keys import Role, key_file
from caredata_spark.landing import discover
from caredata_spark.objections import (
    EVENTS_COLUMNS,
    EVENTS_SCHEMA,
    load_objection_codes,
    objection_events,
    objection_history,
    only,
    type1_objectors,
    without,
)
from caredata_spark.observability import get_logger, log_event, stage
from caredata_spark.organisations import SubmitterRegister, load_register
from caredata_spark.parsing import header_columns, missing_columns, parquet_rows, parse_lines
from caredata_spark.purge import newly_objecting, purge_type1
from caredata_spark.quarantine import quarantine_rows
from caredata_spark.storage import DeltaStore
from caredata_spark.submission_lines import inspect_files, read_lines
from caredata_spark.submissions import LEDGER, PlannedFile, plan_run, txn
from caredata_spark.tables import (
    DATA_QUALITY,
    IDENTITY_VAULT,
    OBJECTIONS,
    QUARANTINE,
    SUBMISSIONS,
    clinical,
    table_path,
)
from caredata_spark.validation import PARSED_KEY, flag_duplicate_keys, flag_foreign_provider, validate

LOG = get_logger("ingest")
LINKED_DATASETS = ("gp_patients", "hes_apc", "hes_op", "hes_ae")
GP_DATASETS = ("gp_patients", "gp_events")
OUTCOMES = ("read", "accepted", "quarantined", "dropped")
IDENTIFYING = ("line", "nhs_number", "nhs_digits", "dob", "postcode", "pseudo_postcode", "quarantine_reasons")


class InvariantBroken(CaredataError):
    """Rows read != accepted + quarantined + dropped: a bug, so nothing is written."""


@dataclass
class IngestResult:
    run_id: int
    resumed: bool = False
    files: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # path -> reason
    ignored: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # submission -> counts
    quality: dict[str, int] = field(default_factory=dict)  # "dataset kind code" -> rows
    purged: dict[str, int] = field(default_factory=dict)  # table -> earlier rows erased (type 1)


@dataclass(frozen=True)
class Keys:
    linkage: KeyFrame
    vault: KeyFrame
    transport_file: str | None


@contextmanager
def ingest_keys(spark: SparkSession, settings: Settings, need_transport: bool) -> Iterator[Keys]:
    with ExitStack() as stack:
        linkage = stack.enter_context(key_file(settings.keys, Role.LINKAGE))
        vault = stack.enter_context(key_file(settings.keys, Role.VAULT))
        transport = (
            str(stack.enter_context(key_file(settings.keys, Role.TRANSPORT))) if need_transport else None
        )
        yield Keys(
            key_frame(spark, str(linkage), Role.LINKAGE),
            key_frame(spark, str(vault), Role.VAULT),
            transport,
        )


def _file_header_problems(header: list[str] | None, dataset: Dataset) -> str | None:
    if header is None:
        return "unreadable file: no header"
    missing = missing_columns(header, dataset)
    return f"header lacks contract columns: {', '.join(missing)}" if missing else None


def _files_frame(spark: SparkSession, plan: list[PlannedFile]) -> DataFrame:
    return spark.createDataFrame(
        [(p.submission_id, p.dataset, p.submitter, p.path) for p in plan],
        "submission_id string, dataset string, submitter string, path string",
    )


def parsed_submissions(
    spark: SparkSession,
    plan: list[PlannedFile],
    keys: Keys,
    result: IngestResult,
    register: SubmitterRegister | None = None,
) -> dict[str, DataFrame]:
    """Per dataset, parsed rows of the plan's usable files; refused files go to `result`.

    A file from a submitter the `register` does not hold is refused before it is opened.
    """
    by_id = {p.submission_id: p for p in plan}
    refused: dict[str, str] = {}
    if register is not None:
        for p in plan:
            if (problem := register.refusal(p.dataset, p.submitter)) is not None:
                refused[p.submission_id] = problem
    registered = [p for p in plan if p.submission_id not in refused]
    csv_files = [p for p in registered if p.format in ("csv", "csv.enc")]
    inspected = inspect_files(
        spark, [(p.submission_id, p.path, p.format == "csv.enc") for p in csv_files], keys.transport_file
    )
    found: dict[str, list[str]] = {}
    for p in csv_files:
        header, refusal = inspected[p.submission_id]
        columns = header_columns(header) if header is not None else None
        problem = refusal or _file_header_problems(columns, DATASETS[p.dataset])
        if problem:
            refused[p.submission_id] = problem
        else:
            found[p.submission_id] = columns  # type: ignore[assignment]
    parquet_files = [p for p in registered if p.format == "parquet"]
    for p in parquet_files:
        problem = _file_header_problems(_parquet_columns(p.path), DATASETS[p.dataset])
        if problem:
            refused[p.submission_id] = problem
    result.refused = {by_id[s].path: reason for s, reason in refused.items()}
    parts: dict[str, list[DataFrame]] = {}
    for name in DATASETS:
        usable = [p for p in csv_files if p.dataset == name and p.submission_id in found]
        if usable:
            parts[name] = [_parsed_csv(spark, DATASETS[name], usable, found, keys.transport_file)]
    for p in parquet_files:
        if p.submission_id not in refused:
            parts.setdefault(p.dataset, []).append(parquet_rows(spark, p.submission_id, p.path, DATASETS[p.dataset]))
    return {name: _union(frames) for name, frames in parts.items()}


def _parsed_csv(
    spark: SparkSession,
    dataset: Dataset,
    files: list[PlannedFile],
    headers: dict[str, list[str]],
    transport_key_file: str | None,
) -> DataFrame:
    """Lines of a dataset's files, parsed per group of files sharing a header."""
    groups: dict[tuple[str, ...], list[PlannedFile]] = {}
    for p in files:
        groups.setdefault(tuple(headers[p.submission_id]), []).append(p)
    return _union(
        read_lines(spark, [(p.submission_id, p.path, p.format == "csv.enc") for p in group], transport_key_file)
        .transform(parse_lines(dataset, header))
        for header, group in groups.items()
    )


def _parquet_columns(path: str) -> list[str] | None:
    try:
        return pq.read_schema(path).names  # the footer only
    except (OSError, pa.ArrowInvalid):
        return None


def _outcome(rows: DataFrame) -> DataFrame:
    quarantined = F.size("quarantine_reasons") > 0
    return rows.select(
        "submission_id", F.when(quarantined, "quarantined").otherwise("accepted").alias("outcome")
    )


def _quality(dataset: str, rows: DataFrame, dropped: DataFrame) -> DataFrame:
    """Counts per (submission, kind, code): quarantine reasons, repair flags, type 1 drops."""
    accepted = F.size("quarantine_reasons") == 0
    return (
        rows.select("submission_id", F.lit("quarantine").alias("kind"), F.explode("quarantine_reasons").alias("code"))
        .unionByName(
            rows.filter(accepted).select("submission_id", F.lit("flag").alias("kind"), F.explode("dq_flags").alias("code"))
        )
        .unionByName(dropped.select("submission_id", F.lit("dropped").alias("kind"), F.lit(reasons.TYPE1_OBJECTION).alias("code")))
        .groupBy("submission_id", "kind", "code")
        .agg(F.count(F.lit(1)).alias("rows"))
        .withColumn("dataset", F.lit(dataset))
    )


def clinical_rows(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """Accepted rows with hashes -> the clinical table: no identifier in clear survives."""

    def transform(accepted: DataFrame) -> DataFrame:
        frame = accepted.transform(generalised())
        return frame.select(*[c for c in frame.columns if c not in IDENTIFYING])

    return transform


def prepared(dataset: Dataset, linkage_key: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """Accepted rows plus the activity date, deregistration date and (linked sets) hashes."""

    def transform(accepted: DataFrame) -> DataFrame:
        dereg = F.col("DEREG_DATE") if dataset.name == "gp_patients" else F.lit(None).cast("date")
        frame = accepted.withColumn("activity_date", F.col(dataset.activity_date)).withColumn("dereg_date", dereg)
        if dataset.name in LINKED_DATASETS:
            return frame.transform(with_linkage_hashes(linkage_key))
        return frame.withColumn("h_nhs", F.lit(None).cast("binary"))

    return transform


def one_per_record(dataset: Dataset) -> Callable[[DataFrame], DataFrame]:
    """One row per (record key, submission): the vault's grain.

    Only datasets whose rows share keys need it (a GP patient's events); deduplicating
    before encryption means each identity is encrypted once, not once per event.
    """
    if dataset.unique_key:
        return lambda rows: rows
    return lambda rows: rows.dropDuplicates(["record_key", "submission_id"])


def line_if_rejected() -> Callable[[DataFrame], DataFrame]:
    """Keep the raw line only where quarantine needs it: accepted rows are cached without it."""
    return lambda rows: rows.withColumn(
        "line", F.when(F.size("quarantine_reasons") > 0, F.col("line"))
    )


def _union(frames: Iterable[DataFrame]) -> DataFrame:
    return reduce(lambda a, b: a.unionByName(b), frames)


@dataclass(frozen=True)
class RunFrames:
    """One run's rows after validation and the type 1 drop, per dataset."""

    kept: dict[str, DataFrame]
    dropped: dict[str, DataFrame]  # submission_id per dropped row
    new_events: DataFrame  # objection code events of this run


def apply_objections(
    spark: SparkSession, store: DeltaStore, warehouse: str, validated: dict[str, DataFrame], linkage_key: KeyFrame
) -> tuple[RunFrames, DataFrame]:
    """Drop every GP row of a patient whose type 1 objection is in force, before any write.

    The state comes from this run's objection events and all earlier ones, so a patient who
    objected last month is dropped from this month's extract too.
    """
    codes = load_objection_codes()
    new_events = (
        validated["gp_events"].filter(F.size("quarantine_reasons") == 0).transform(objection_events(codes, linkage_key))
        if "gp_events" in validated
        else spark.createDataFrame([], EVENTS_SCHEMA)
    )
    history = objection_history(store, warehouse)
    objectors = type1_objectors(history.unionByName(new_events)).persist(StorageLevel.MEMORY_AND_DISK)
    whose_line = F.coalesce(F.col("record_key"), F.col(PARSED_KEY))  # a malformed line's too
    kept, dropped = {}, {}
    for name, rows in validated.items():
        gp = name in GP_DATASETS
        kept[name] = (rows.transform(without(objectors, matched_on=whose_line)) if gp else rows).drop(PARSED_KEY)
        dropped[name] = (
            rows.transform(only(objectors, matched_on=whose_line)).select("submission_id")
            if gp
            else spark.createDataFrame([], "submission_id string")
        )
    return RunFrames(kept, dropped, new_events), objectors


def count_outcomes(validated: dict[str, DataFrame], frames: RunFrames) -> dict[str, dict[str, int]]:
    """Per submission: read, accepted, quarantined, dropped; refuses to go on if they differ."""
    read = _union(rows.select("submission_id", F.lit("read").alias("outcome")) for rows in validated.values())
    outcomes = _union(
        _outcome(frames.kept[n]).unionByName(frames.dropped[n].withColumn("outcome", F.lit("dropped")))
        for n in validated
    )
    table = (
        read.unionByName(outcomes)
        .groupBy("submission_id")
        .pivot("outcome", list(OUTCOMES))
        .count()
        .fillna(0)
        .collect()  # one row per file
    )
    counts = {r["submission_id"]: {k: int(r[k]) for k in OUTCOMES} for r in table}
    for sid, c in counts.items():
        if c["read"] != c["accepted"] + c["quarantined"] + c["dropped"]:
            raise InvariantBroken(
                f"submission {sid}: read {c['read']} != accepted {c['accepted']} + quarantined "
                f"{c['quarantined']} + dropped {c['dropped']}; nothing was written"
            )
    return counts


def write_run(
    store: DeltaStore,
    warehouse: str,
    run_id: int,
    frames: RunFrames,
    files: DataFrame,
    keys: Keys,
) -> None:
    """Every table of the run, each under the run's Delta transaction id."""
    accepted = {
        name: rows.filter(F.size("quarantine_reasons") == 0).transform(prepared(DATASETS[name], keys.linkage))
        for name, rows in frames.kept.items()
    }
    for name, rows in accepted.items():
        path = clinical(name)
        store.write(rows.transform(clinical_rows(DATASETS[name])), table_path(warehouse, path), txn=txn(path, run_id))
    vault = _union(
        rows.transform(one_per_record(DATASETS[name])).transform(vault_rows(DATASETS[name].source, keys.vault))
        for name, rows in accepted.items()
    )
    store.write(vault, table_path(warehouse, IDENTITY_VAULT), txn=txn(IDENTITY_VAULT, run_id))
    rejected = _union(
        rows.filter(F.size("quarantine_reasons") > 0).select(
            "submission_id", "line_number", "record_key", "line", F.col("quarantine_reasons").alias("reasons")
        )
        for rows in frames.kept.values()
    ).join(F.broadcast(files), on="submission_id", how="inner")  # one row per file
    store.write(
        rejected.transform(quarantine_rows(keys.vault, run_id)),
        table_path(warehouse, QUARANTINE),
        txn=txn(QUARANTINE, run_id),
    )
    run = F.lit(run_id).cast("long").alias("run_id")
    store.write(
        frames.new_events.select(*EVENTS_COLUMNS, run),
        table_path(warehouse, OBJECTIONS),
        txn=txn(OBJECTIONS, run_id),
        add_columns=True,  # h_nhs, in a warehouse made before objections kept it
    )
    quality = _union(_quality(n, frames.kept[n], frames.dropped[n]) for n in frames.kept).join(
        F.broadcast(files.select("submission_id", "submitter")), on="submission_id", how="inner"
    )
    store.write(
        quality.select("dataset", "submitter", "submission_id", "kind", "code", "rows", run),
        table_path(warehouse, DATA_QUALITY),
        txn=txn(DATA_QUALITY, run_id),
    )


def ledger_rows(
    spark: SparkSession, run_id: int, plan: list[PlannedFile], result: IngestResult
) -> DataFrame:
    by_path = {p.path: p for p in plan}
    refused = {by_path[path].submission_id: why for path, why in result.refused.items()}
    rows = []
    for p in plan:
        c = result.counts.get(p.submission_id, dict.fromkeys(OUTCOMES, 0))
        status = "refused" if p.submission_id in refused else "ingested"
        rows.append(
            (p.submission_id, p.dataset, p.submitter, p.path, p.format, p.bytes, run_id, status,
             refused.get(p.submission_id), c["read"], c["accepted"], c["quarantined"], c["dropped"], None)
        )
    return spark.createDataFrame(rows, LEDGER).withColumn("recorded_at", F.current_timestamp())


def ingest(
    spark: SparkSession,
    store: DeltaStore,
    settings: Settings,
    landing: str,
    warehouse: str,
    retry_refused: bool = False,
) -> IngestResult:
    files, ignored = discover(landing)
    register = load_register(settings.submitters) if settings.submitters else None  # before any write
    with stage(LOG, "ingest.plan", landing=landing) as metrics:
        run_id, plan, resumed = plan_run(spark, store, warehouse, files, retry_refused)
        metrics.update(run_id=run_id, files=len(plan), resumed=resumed, ignored=len(ignored))
    result = IngestResult(run_id=run_id, resumed=resumed, files=len(plan), ignored=ignored)
    if not plan:
        return result
    files_df = _files_frame(spark, plan)
    with ingest_keys(spark, settings, any(p.format == "csv.enc" for p in plan)) as keys:
        with stage(LOG, "ingest.parse", run_id=run_id) as metrics:
            parsed = parsed_submissions(spark, plan, keys, result, register)
            metrics.update(refused_files=len(result.refused))
        validated = {
            name: rows.transform(validate(DATASETS[name]))
            .transform(flag_duplicate_keys(DATASETS[name]))
            .transform(flag_foreign_provider(DATASETS[name], files_df))
            .transform(line_if_rejected())
            .persist(StorageLevel.MEMORY_AND_DISK)
            for name, rows in parsed.items()
        }
        try:
            if validated:
                frames, objectors = apply_objections(spark, store, warehouse, validated, keys.linkage)
                with stage(LOG, "ingest.count", run_id=run_id) as metrics:
                    result.counts = count_outcomes(validated, frames)
                    metrics.update({k: sum(c[k] for c in result.counts.values()) for k in OUTCOMES})
                with stage(LOG, "ingest.write", run_id=run_id):
                    write_run(store, warehouse, run_id, frames, files_df, keys)
                with stage(LOG, "ingest.purge", run_id=run_id) as metrics:
                    # a dissent arriving after the patient's rows: erase them before the ledger
                    result.purged = purge_type1(
                        store, warehouse, newly_objecting(objectors, frames.new_events), requester="caredata ingest"
                    )
                    metrics.update(purged_rows=result.purged)  # counts per table only
                objectors.unpersist()
            store.write(
                ledger_rows(spark, run_id, plan, result),
                table_path(warehouse, SUBMISSIONS),
                txn=txn(SUBMISSIONS, run_id),
            )
        finally:
            for rows in validated.values():
                rows.unpersist()
    for path, why in result.refused.items():
        log_event(LOG, "ingest.refused", file=path, reason=why)
    if validated:
        result.quality = quality_summary(store, warehouse, run_id)
        log_event(LOG, "ingest.data_quality", run_id=run_id, rows=result.quality)
    return result


def quality_summary(store: DeltaStore, warehouse: str, run_id: int) -> dict[str, int]:
    """Rows per (dataset, kind, code) of a run: a few dozen codes, fine on the driver."""
    totals = (
        store.read(table_path(warehouse, DATA_QUALITY))
        .filter(F.col("run_id") == run_id)
        .groupBy("dataset", "kind", "code")
        .agg(F.sum("rows").alias("rows"))
        .orderBy(F.desc("rows"))
        .collect()
    )
    return {f"{r['dataset']} {r['kind']} {r['code']}": int(r["rows"]) for r in totals}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retry-refused",
        action="store_true",
        help="read again the landed files the ledger records as refused (after fixing the "
        "platform's side, e.g. the transport key); files with faults of their own are refused again",
    )


def _run(context: Context, args: argparse.Namespace) -> None:
    result = ingest(
        context.spark, context.store, context.settings,
        context.require("landing"), context.require("warehouse"), retry_refused=args.retry_refused,
    )
    totals = {k: sum(c[k] for c in result.counts.values()) for k in OUTCOMES}
    print(
        f"ingest run {result.run_id}{' (resumed)' if result.resumed else ''}: {result.files} new "
        f"file(s); rows read {totals['read']}, accepted {totals['accepted']}, quarantined "
        f"{totals['quarantined']}, dropped (type 1) {totals['dropped']}"
    )
    if any(result.purged.values()):
        erased = ", ".join(f"{table} {rows}" for table, rows in result.purged.items() if rows)
        print(f"  erased earlier GP rows of new type 1 objectors: {erased}")
    for what, rows in list(result.quality.items())[:15]:
        print(f"  {rows:>10}  {what}")
    for path in result.ignored:
        print(f"  ignored (not <dataset>/<submitter>/<file>.csv|.csv.enc|.parquet): {path}")
    if result.refused:
        for path, why in result.refused.items():
            print(f"  refused {path}: {why}")
        raise FilesRefused(f"{len(result.refused)} file(s) refused; the others were ingested")


class FilesRefused(CaredataError):
    exit_code = 3


COMMAND = Command(
    name="ingest",
    help="validate new landing-zone submissions into Delta tables (quarantine, vault, ledger)",
    add_arguments=_add_arguments,
    run=_run,
)
