"""`caredata publish`: the green tables, their CSV downloads and the publication site.

The disclosure engine (`disclosure.protect_table`) turns a record-level frame into an
audited public table; this module builds those frames (the `sources` named in
`conf/publication.yaml`) from the warehouse, runs every table through the engine, writes
`green/<table>` Delta tables and the static site. A table whose audit fails is left out
and named at the end (non-zero exit); the others are still published.

Sources read the clinical tables, the ingest ledger and the link map only: no identity
vault, no key. Green is anonymous, so type 2 objectors are counted (type 1 objectors' GP
rows never reached the warehouse). Choices the tables depend on:
- A record key recurs when a practice re-sends a registration in a later extract or a
  hospital resubmits an episode: the row of the latest ingest run is the record.
- People are link-map persons; a record that did not link counts as a person of its own.
  A person registered at several practices is counted once, at the practice (and home
  area) of their latest registration current on the reference date.
- The warehouse holds age at each record's activity date, never a date of birth, so age
  on the reference date is approximated as that age plus the whole years elapsed since
  (at most one year out). Admissions use age at admission, as HES does.
- Hospital tables cover the `period_months` whole months up to the reference date; the
  reference date defaults to the latest activity date in the warehouse, so a publication
  describes the data it has, and is then taken back to a month's end (`whole_months_end`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from caredata_spark import audit
from caredata_spark.aggregates import GROUPING_ID, filter_condition, require_columns
from caredata_spark.cli import Command, Context
from caredata_spark.clinical_codes import Icd10Chapter, icd10_chapter, load_icd10_chapters
from caredata_spark.disclosure import History, protect_table
from caredata_spark.disclosure_audit import DisclosureRisk
from caredata_spark.errors import UsageError
from caredata_spark.observability import get_logger, log_event, stage
from caredata_spark.publication_site import SiteTable, write_site
from caredata_spark.publication_tables import (
    Filter,
    Publication,
    Sources,
    TableDefinition,
    load_publication,
)
from caredata_spark.publications import next_number, published_cells, record_publication
from caredata_spark.storage import ARCHIVE_PROPERTIES, DeltaStore
from caredata_spark.submissions import latest_per_key
from caredata_spark.tables import (
    HES_DATASETS,
    LINK_MAP,
    SUBMISSIONS,
    clinical,
    green,
    publication_cells,
    table_path,
)

LOG = get_logger("publish")
MANIFEST = "publication.json"
SEX_LABELS = {"1": "Male", "2": "Female", "9": "Not specified", "0": "Not known"}
GP_SOURCE = "gp"  # link map `source` of GP records (registrations and events share keys)
GP_CODE = "snomed_code"  # the GP code column of the GP sources


# --- record selection -------------------------------------------------------------------


def linked_person(links: DataFrame, source: str) -> Callable[[DataFrame], DataFrame]:
    """Add `person_id` from the link map (null when the record did not link).

    The link map has one row per (source, record key), so this adds no rows; both sides
    grow with the population, so it is a shuffle (sort-merge) join on the record key.
    """
    persons = links.where(F.col("source") == source).select("record_key", "person_id")

    def transform(records: DataFrame) -> DataFrame:
        return records.join(persons, on="record_key", how="left")

    return transform


def person_or_record(source: str) -> Callable[[DataFrame], DataFrame]:
    """An unlinked record stands for a person of its own (prefixed: no person id clashes)."""

    def transform(records: DataFrame) -> DataFrame:
        own = F.concat(F.lit(f"{source}:"), F.col("record_key"))
        return records.withColumn("person_id", F.coalesce(F.col("person_id"), own))

    return transform


def registered_on(reference: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Registrations current on `reference`: started by then, not ended by then."""

    def transform(registrations: DataFrame) -> DataFrame:
        day = F.lit(reference)
        ended = F.col("dereg_date").isNotNull() & (F.col("dereg_date") <= day)
        return registrations.where((F.col("REG_DATE") <= day) & ~ended)

    return transform


def latest_registration(registrations: DataFrame) -> DataFrame:
    """One registration per person, the most recent: where a mover is counted."""
    newest_first = Window.partitionBy("person_id").orderBy(
        F.col("REG_DATE").desc(), F.col("record_key").desc()
    )
    return (
        registrations.withColumn("_newest", F.row_number().over(newest_first))
        .where(F.col("_newest") == 1)
        .drop("_newest")
    )


def within_months(date: str, reference: dt.date, months: int) -> Callable[[DataFrame], DataFrame]:
    """Rows whose `date` is in the `months` months ending on `reference` (inclusive)."""

    def transform(records: DataFrame) -> DataFrame:
        day = F.lit(reference)
        return records.where((F.col(date) > F.add_months(day, -months)) & (F.col(date) <= day))

    return transform


def first_episode_of_spell(episodes: DataFrame) -> DataFrame:
    """One row per admission: HES counts episodes, so a spell (same person, provider and
    admission date) is represented by its first episode."""
    first = Window.partitionBy("person_id", "provider", "ADMIDATE").orderBy(
        F.col("EPISTART").asc_nulls_last(), F.col("record_key")
    )
    return (
        episodes.withColumn("_order", F.row_number().over(first))
        .where(F.col("_order") == 1)
        .drop("_order")
    )


# --- published categories ---------------------------------------------------------------


def age_on(reference: dt.date) -> Column:
    """Age on `reference` from age at the activity date: + whole years elapsed since."""
    elapsed = F.floor(F.months_between(F.lit(reference), F.col("activity_date")) / 12)
    return (F.col("age") + elapsed).cast("int")


def age_band(age: Column, sources: Sources) -> Column:
    """`00-04`, `05-09`, ... `90+` (zero-padded so bands sort as text); null when unknown."""
    width, oldest = sources.age_band_years, sources.oldest_band
    lower = F.floor(age / width) * width
    return (
        F.when(age.isNull() | (age < 0), F.lit(None).cast("string"))
        .when(lower >= oldest, F.lit(f"{oldest:02d}+"))
        .otherwise(F.format_string("%02d-%02d", lower.cast("int"), (lower + width - 1).cast("int")))
    )


def sex_label(code: Column) -> Column:
    """The person gender code as words; a missing code stays null (published `Unknown`)."""
    labels = F.create_map(*(F.lit(v) for item in SEX_LABELS.items() for v in item))
    return F.try_element_at(labels, code)


def month(date: str) -> Column:
    return F.date_format(F.col(date), "yyyy-MM")


def chapter_label(code: Column, chapters: list[Icd10Chapter]) -> Column:
    """`04 Endocrine, nutritional and metabolic diseases` (numbered so chapters sort); null
    (published `Unknown`) for a missing, malformed or unchaptered code."""
    chapter = icd10_chapter(code, chapters)
    return F.when(
        chapter.isNotNull(), F.format_string("%02d %s", chapter["chapter"], chapter["label"])
    )


# --- sources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Warehouse:
    """The warehouse as the sources read it: a missing table is a usage error (publish
    runs after ingest and link), a clinical table is read one row per record key."""

    store: DeltaStore
    root: str

    def table(self, name: str) -> DataFrame:
        path = table_path(self.root, name)
        if not self.store.exists(path):
            raise UsageError(
                f"table {name} does not exist in {self.root}: run `caredata ingest` and "
                "`caredata link` before `caredata publish`"
            )
        return self.store.read(path)

    @property
    def links(self) -> DataFrame:
        return self.table(LINK_MAP).select("source", "record_key", "person_id")

    def records(self, dataset: str, *columns: str) -> DataFrame:
        """The latest row of every record key of a clinical table, `columns` only."""
        ledger = self.table(SUBMISSIONS)
        return (
            self.table(clinical(dataset))
            .select("submission_id", "record_key", *columns)
            .transform(latest_per_key(ledger))
        )

    def persons(self, dataset: str, source: str, *columns: str) -> DataFrame:
        """`records` with the person each belongs to (see `person_or_record`)."""
        return (
            self.records(dataset, *columns)
            .transform(linked_person(self.links, source))
            .transform(person_or_record(source))
        )


def registered_people(wh: Warehouse, reference: dt.date, sources: Sources) -> DataFrame:
    """One row per person registered on `reference`, at their latest registration."""
    return (
        wh.persons(
            "gp_patients", GP_SOURCE, "provider", "REG_DATE", "dereg_date", "activity_date",
            "age", "sex", "district", "area",
        )
        .transform(registered_on(reference))
        .transform(latest_registration)
        .select(
            "person_id",
            F.col("provider").alias("practice"),
            "area",
            "district",
            age_band(age_on(reference), sources).alias("age_band"),
            sex_label(F.col("sex")).alias("sex"),
        )
    )


def gp_codes(wh: Warehouse, reference: dt.date, keep: Column | None = None) -> DataFrame:
    """GP codes up to `reference`, one row per (person, record key, code) with its first
    date: a person has a condition once, however often it is coded or re-sent. The record
    key stays so that an unlinked patient can still be told apart (`person_or_record`).
    `keep` (on `snomed_code`) drops the codes nobody counts before the events are joined
    to the link map and grouped."""
    events = wh.table(clinical("gp_events")).select(
        "record_key", "EVENT_DATE", F.col("SNOMED_CODE").alias(GP_CODE)
    )
    wanted = F.col("EVENT_DATE") <= F.lit(reference)
    return (
        events.where(wanted if keep is None else wanted & keep)
        .transform(linked_person(wh.links, GP_SOURCE))
        .groupBy("person_id", "record_key", GP_CODE)
        .agg(F.min("EVENT_DATE").alias("first_date"))
    )


def counted_codes(tables: Sequence[TableDefinition]) -> Column | None:
    """The GP codes `tables` can count, or None for all of them.

    A table counting distinct persons needs a person's codes only where it filters on
    them; without such a filter, one row per person (code null) counts them the same. So
    when every table counts persons and none is broken down by code, the codes matching
    some table's code filters (rate numerators included) are all that is needed: at 1M
    people, 1.1M registered person x code rows instead of 11.3M.
    """
    needs_every_code = any(
        t.measure.count != "persons" or GP_CODE in {d.name for d in t.dimensions} for t in tables
    )
    if needs_every_code:
        return None
    filters = [
        f
        for t in tables
        for f in [*t.filters, *(t.rate.numerator if t.rate else [])]
        if f.column == GP_CODE
    ]
    return reduce(lambda a, b: a | b, [filter_condition(f) for f in filters], F.lit(False))


def gp_registered(
    wh: Warehouse, reference: dt.date, sources: Sources, tables: Sequence[TableDefinition]
) -> DataFrame:
    """Registered people x their GP codes (those `tables` count: `counted_codes`); a person
    with none of them keeps one row, code null.

    Both sides are keyed by person; a shuffle join (each grows with the population).
    """
    codes = (
        gp_codes(wh, reference, counted_codes(tables))
        .transform(person_or_record(GP_SOURCE))
        .select("person_id", GP_CODE)
        .distinct()
    )
    return (
        registered_people(wh, reference, sources)
        .join(codes, on="person_id", how="left")
        .select("person_id", "practice", "area", "district", "age_band", "sex", GP_CODE)
    )


def hes_apc(
    wh: Warehouse, reference: dt.date, sources: Sources, tables: Sequence[TableDefinition]
) -> DataFrame:
    """One row per admission in the period: chapter of the primary diagnosis, age, sex."""
    chapters = load_icd10_chapters()
    return (
        wh.persons(
            "hes_apc", "hes_apc", "provider", "ADMIDATE", "EPISTART", "DIAG_01", "age", "sex"
        )
        .transform(within_months("ADMIDATE", reference, sources.period_months))
        .transform(first_episode_of_spell)
        .select(
            chapter_label(F.col("DIAG_01"), chapters).alias("chapter"),
            age_band(F.col("age"), sources).alias("age_band"),
            sex_label(F.col("sex")).alias("sex"),
        )
    )


def hes_op(
    wh: Warehouse, reference: dt.date, sources: Sources, tables: Sequence[TableDefinition]
) -> DataFrame:
    """One row per outpatient appointment in the period."""
    return (
        wh.records("hes_op", "APPTDATE", "ATTENDED", "TRETSPEF")
        .transform(within_months("APPTDATE", reference, sources.period_months))
        .select(
            F.col("TRETSPEF").alias("specialty"),
            month("APPTDATE").alias("month"),
            F.col("ATTENDED").alias("attended"),
        )
    )


def hes_ae(
    wh: Warehouse, reference: dt.date, sources: Sources, tables: Sequence[TableDefinition]
) -> DataFrame:
    """One row per A&E attendance in the period."""
    return (
        wh.records("hes_ae", "provider", "ARRIVALDATE")
        .transform(within_months("ARRIVALDATE", reference, sources.period_months))
        .select("provider", month("ARRIVALDATE").alias("month"))
    )


def matching(code: Filter, where: str) -> Callable[[DataFrame], DataFrame]:
    """Linked rows meeting a configured code filter (its column must be one we provide)."""

    def transform(rows: DataFrame) -> DataFrame:
        require_columns(rows, [code.column], where)
        return rows.where(F.col("person_id").isNotNull() & filter_condition(code))

    return transform


def diabetes_pathway(
    wh: Warehouse, reference: dt.date, sources: Sources, tables: Sequence[TableDefinition]
) -> DataFrame:
    """One row per linked registered person whose first pathway GP code is at least
    `pathway.months` before `reference` (so everyone has the full follow-up), flagged
    "true" when admitted with a pathway primary diagnosis within those months of it.

    Joins are keyed by person: first codes (one row per coded person) against their
    related admissions (a few each), then against registered people.
    """
    pathway = sources.pathway
    first_code = (
        gp_codes(wh, reference)
        .transform(matching(pathway.gp_code, "sources.pathway.gp_code"))
        .groupBy("person_id")
        .agg(F.min("first_date").alias("first_date"))
        .where(F.col("first_date") <= F.add_months(F.lit(reference), -pathway.months))
    )
    admissions = (
        wh.records("hes_apc", "ADMIDATE", "DIAG_01")
        .transform(linked_person(wh.links, "hes_apc"))
        .select("person_id", "ADMIDATE", F.col("DIAG_01").alias("diagnosis"))
        .transform(matching(pathway.admission, "sources.pathway.admission"))
    )
    followed = F.col("ADMIDATE").between(
        F.col("first_date"), F.add_months(F.col("first_date"), pathway.months)
    )
    admitted = (
        first_code.join(admissions, on="person_id", how="left")
        .groupBy("person_id")
        .agg(F.coalesce(F.max(followed), F.lit(False)).alias("admitted"))
    )
    return (
        registered_people(wh, reference, sources)
        .join(admitted, on="person_id", how="inner")
        .select(
            "person_id",
            "area",
            "district",
            F.when(F.col("admitted"), "true").otherwise("false").alias("admitted_12m"),
        )
    )


# a source gets the tables that read it, so it can leave out what none of them counts
Source = Callable[[Warehouse, dt.date, Sources, Sequence[TableDefinition]], DataFrame]
SOURCES: dict[str, Source] = {
    "gp_registered": gp_registered,
    "hes_ae": hes_ae,
    "hes_apc": hes_apc,
    "hes_op": hes_op,
    "diabetes_pathway": diabetes_pathway,
}


# --- the job ----------------------------------------------------------------------------


def whole_months_end(day: dt.date) -> dt.date:
    """`day` if it ends its month, else the last day of the month before.

    A publication covers whole months: two publications made in one month are then one
    table, and no difference between them isolates a few days' records (a rolling window
    ending on any day would, as would registrations counted on any day).
    """
    following = day + dt.timedelta(days=1)
    return day if following.day == 1 else day.replace(day=1) - dt.timedelta(days=1)


def latest_activity(wh: Warehouse) -> dt.date:
    """The latest activity date in the clinical tables, ignoring dates in the future."""
    frames = [
        wh.store.read(path).select("activity_date")
        for dataset in ("gp_events", *HES_DATASETS)
        if wh.store.exists(path := table_path(wh.root, clinical(dataset)))
    ]
    if not frames:
        raise UsageError(f"no clinical tables in {wh.root}: run `caredata ingest` first")
    date = F.col("activity_date")
    row = (
        reduce(DataFrame.unionByName, frames)
        .agg(F.max(F.when(date <= F.current_date(), date)).alias("latest"))
        .first()
    )
    if row is None or row["latest"] is None:
        raise UsageError(f"no clinical activity in {wh.root}: nothing to publish")
    return row["latest"]


def default_out(warehouse: str) -> str:
    """`<warehouse>/../publication`: beside the warehouse, not inside its tables."""
    return os.path.join(os.path.dirname(warehouse.rstrip("/")) or ".", "publication")


@contextmanager
def replaced_folder(out: Path) -> Iterator[Path]:
    """A staging folder that replaces `out` only when the block completes, so readers see
    the previous publication or the new one, never a mix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging, previous = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        os.rename(out, previous)
    os.rename(staging, out)
    shutil.rmtree(previous, ignore_errors=True)


def public_frame(public: DataFrame) -> pd.DataFrame:
    """A published table for the site and CSV, finest cells first, then the margins.

    Bounded by the table's cells, not the population. Counts stay integers (pandas would
    make a column with nulls float and print 40.0).
    """
    dims = public.columns[: public.columns.index(GROUPING_ID)]
    frame = public.toPandas().sort_values([GROUPING_ID, *dims], ignore_index=True)
    counts = [c for c in ("count_value", "denominator_value") if c in frame.columns]
    return frame.astype({c: "Int64" for c in counts})


@dataclass
class PublishResult:
    reference_date: dt.date
    out: Path
    published: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> summary
    refused: dict[str, str] = field(default_factory=dict)  # name -> the audit's reason
    seconds: dict[str, float] = field(default_factory=dict)  # name -> time to publish it
    number: int = 0  # in the publications ledger
    versions: dict[str, int] = field(default_factory=dict)  # name -> its green table's version

    def manifest(self) -> str:
        """What the site folder holds: the reference date, each table's suppression counts."""
        return json.dumps(
            {
                "publication": self.number,
                "reference_date": str(self.reference_date),
                "tables": self.published,
                "not_published": sorted(self.refused),
            },
            indent=2,
        )

    def figures(self) -> dict[str, Any]:
        cells = sum(s["cells"] for s in self.published.values())
        return {
            "publication": self.number,
            "reference_date": str(self.reference_date),
            "out": str(self.out),
            "tables": len(self.published),
            "refused": sorted(self.refused),
            "cells": cells,
            "primary": sum(s["primary"] for s in self.published.values()),
            "secondary": sum(s["secondary"] for s in self.published.values()),
        }


def build_sources(
    publication: Publication, wh: Warehouse, reference: dt.date
) -> dict[str, DataFrame]:
    """The frames the tables name, each built once; one used by several tables is kept
    (memory, spilling to disk) so it is read and joined once."""
    if publication.sources is None:
        raise UsageError("publication configuration has no `sources:` section")
    uses = Counter(d.source for d in publication.tables.values())
    unknown = sorted(set(uses) - set(SOURCES))
    if unknown:
        raise UsageError(
            f"unknown source {unknown[0]!r} in the publication tables (known: "
            f"{', '.join(SOURCES)})"
        )
    frames = {}
    for name, count in uses.items():
        readers = [d for d in publication.tables.values() if d.source == name]
        frame = SOURCES[name](wh, reference, publication.sources, readers)
        frames[name] = frame.persist(StorageLevel.MEMORY_AND_DISK) if count > 1 else frame
    return frames


def publish(
    spark: SparkSession,
    store: DeltaStore,
    warehouse: str,
    out: str | Path,
    reference: dt.date | None = None,
    publication: Publication | None = None,
    requester: str = "caredata publish",
) -> PublishResult:
    """Publish every table of `publication` (default conf/publication.yaml), audited.

    Each table is protected and audited by the engine, written to `green/<table>`
    (overwritten) and read back, so the CSV and the site show exactly the Delta table. A
    refused table keeps its previous green version and is absent from the new site. The
    versions written become one set in the publications ledger, committed after all of them
    and before the site is swapped in. Like every release, the publication is recorded in
    `release/audit`: started, then done (cells published, tables withheld) or failed.
    """
    publication = publication or load_publication()
    wh = Warehouse(store, warehouse)
    reference = whole_months_end(reference or latest_activity(wh))
    result = PublishResult(reference, Path(out), number=next_number(store, warehouse))
    entry = audit.AuditEntry(
        at=audit.now(), action=audit.PUBLICATION, outcome=audit.STARTED, requester=requester, flow="green",
        fields=sorted(publication.tables), release_id=f"publication-{result.number}",
    )
    with audit.audited(spark, store, warehouse, entry):
        _publish_tables(wh, publication, result)
    figures = result.figures()
    withheld = "; ".join(result.refused[name] for name in sorted(result.refused))
    done = audit.stamped(
        entry, outcome=audit.DONE, fields=sorted(result.published), rows=figures["cells"], reason=withheld or None
    )
    audit.record(spark, store, warehouse, done)
    log_event(LOG, "publish.done", **figures)
    return result


def record_cells(
    store: DeltaStore, warehouse: str, name: str, earlier: DataFrame | None, cells: DataFrame
) -> None:
    """`publish/cells/<table>` rewritten as the recorded versions plus this one. Read from
    the table it overwrites, so materialised first (cells of a table, not records); the
    rows of a publication that failed after writing them are dropped here."""
    versions = cells if earlier is None else earlier.unionByName(cells)
    store.write(
        versions.localCheckpoint(), table_path(warehouse, publication_cells(name)), mode="overwrite"
    )


def _publish_tables(wh: Warehouse, publication: Publication, result: PublishResult) -> None:
    """Every table through the engine into Delta and the staged site, then the ledger."""
    store, warehouse, reference = wh.store, wh.root, result.reference_date
    sources = build_sources(publication, wh, reference)
    site: list[SiteTable] = []
    try:
        with replaced_folder(result.out) as staging:
            for name, definition in publication.tables.items():
                started = time.perf_counter()
                with stage(LOG, "publish.table", table=name) as metrics:
                    earlier = published_cells(store, warehouse, name) if definition.period else None
                    try:
                        table = protect_table(
                            sources[definition.source], definition, publication.disclosure, name,
                            History(result.number, earlier),
                        )
                    except DisclosureRisk as risk:
                        result.refused[name] = str(risk)
                        metrics["refused"] = True
                        continue
                    path = table_path(warehouse, green(name))
                    store.write(table.public, path, mode="overwrite", properties=ARCHIVE_PROPERTIES)
                    if table.cells is not None:
                        record_cells(store, warehouse, name, earlier, table.cells)
                    result.versions[name] = store.version(path)  # type: ignore[assignment]
                    public = public_frame(store.read(path, version=result.versions[name]))
                    metrics.update(table.summary)
                result.published[name] = table.summary
                result.seconds[name] = round(time.perf_counter() - started, 3)
                site.append(SiteTable(name, definition, public, table.summary))
            withheld = [publication.tables[name] for name in result.refused]
            write_site(site, publication.disclosure, staging, withheld)
            (staging / MANIFEST).write_text(result.manifest(), encoding="utf-8")
            # last, so a publication that fails part-way never becomes the latest set
            record_publication(
                store, warehouse, result.number, reference, result.versions, result.published,
                result.refused,
            )
    finally:
        for frame in sources.values():
            frame.unpersist()


def require_all_published(result: PublishResult) -> None:
    """Fail (after everything publishable was published) naming each refused table."""
    if result.refused:
        raise DisclosureRisk(
            f"{len(result.refused)} table(s) not published: "
            + "; ".join(result.refused[name] for name in sorted(result.refused))
        )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", help="folder of the site and CSV downloads (default <warehouse>/../publication)"
    )
    parser.add_argument(
        "--date",
        help="reference date YYYY-MM-DD (default the latest activity date in the warehouse)",
    )
    parser.add_argument(
        "--requester", default="caredata publish", help="who publishes (audited; default: caredata publish)"
    )


def _run(context: Context, args: argparse.Namespace) -> None:
    try:
        reference = dt.date.fromisoformat(args.date) if args.date else None
    except ValueError:
        raise UsageError(f"--date: expected YYYY-MM-DD, got {args.date!r}") from None
    warehouse = context.require("warehouse")
    result = publish(
        context.spark, context.store, warehouse, args.out or default_out(warehouse), reference,
        requester=args.requester,
    )
    print(json.dumps(result.figures(), indent=2))
    require_all_published(result)


COMMAND = Command(
    name="publish",
    help="publish the green tables: suppressed, rounded, audited; Delta, CSV and a static site",
    add_arguments=_add_arguments,
    run=_run,
)
