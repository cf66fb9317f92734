"""One synthetic run: population, five datasets, ground truth, then the landing zone.

Order matters for what others can see. The truth tables are committed first (Delta,
atomic), the files are written to a staging folder in the same Spark job, and the
dataset folders are moved into the landing zone last. A failure at any step removes what
the run created, so an ingest never sees half a landing zone or records without truth.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.errors import UsageError
from caredata_spark.objections import load_objection_codes
from caredata_spark.observability import get_logger, stage
from caredata_spark.storage import DeltaStore
from caredata_spark.synthetic.activity import Plan, all_rows
from caredata_spark.synthetic.catalogues import CodeBook, load_code_lists
from caredata_spark.synthetic.geography import Layout
from caredata_spark.synthetic.people import people_truth, population
from caredata_spark.synthetic.sampling import Draws
from caredata_spark.synthetic.settings import SynthSettings
from caredata_spark.synthetic.writer import FileFormat, file_variants, prepare, staging_folder, write
from caredata_spark.tables import DATASETS

TRUTH_PEOPLE = "people"  # person_id -> true identifiers, registrations, conditions, objections
TRUTH_RECORDS = "records"  # every landing-zone row -> person, noise, dirt, objection state


@dataclass(frozen=True)
class SynthResult:
    landing: str
    truth: str
    people: int
    practices: int
    providers: int
    rows: dict[str, int]  # rows written per dataset
    files: int


def default_truth(landing: str) -> str:
    """`truth` beside the landing zone: outside it, so ingest never reads the answers."""
    return str(Path(landing).resolve().parent / "truth")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_targets(landing: Path, truth: Path) -> None:
    """Refuse to mix two runs: no dataset folder or truth table may exist already."""
    if _inside(truth, landing) or _inside(landing, truth):
        raise UsageError(f"--truth {truth} must be outside the landing zone {landing} (and not hold it)")
    taken = [landing / d for d in DATASETS if (landing / d).exists()]
    taken += [truth / t for t in (TRUTH_PEOPLE, TRUTH_RECORDS) if (truth / t).exists()]
    if taken:
        raise UsageError(f"{taken[0]} already exists: synth writes a fresh landing zone and truth; remove it first")


def _publish(staging: Path, landing: Path, moved: list[Path]) -> None:
    for dataset in DATASETS:
        source = staging / dataset
        if source.exists():
            source.rename(landing / dataset)
            moved.append(landing / dataset)


def generate(
    spark: SparkSession,
    store: DeltaStore,
    settings: SynthSettings,
    landing: str,
    truth: str,
    public_key: str | None = None,
    logger: logging.Logger | None = None,
    parallelism: int | None = None,
) -> SynthResult:
    """Generate the landing zone at `landing` and the ground truth at `truth`.

    `public_key` (a transport public key's text) encrypts every file to `.csv.enc`.
    `parallelism` (default: the cluster's) only changes how work is split, never a byte.
    """
    logger = logger or get_logger("synth")
    landing_path, truth_path = Path(landing).resolve(), Path(truth).resolve()
    _check_targets(landing_path, truth_path)
    if public_key and settings.format != "csv":
        raise UsageError("--encrypt applies to CSV submissions; drop --format parquet")
    book = CodeBook.build(settings, load_code_lists(settings.codes_file))
    objection_codes = load_objection_codes(settings.objections_file)
    layout = Layout.plan(settings.people, settings.population)
    draws = Draws(settings.seed)
    parallelism = parallelism or spark.sparkContext.defaultParallelism
    plan = Plan(settings, layout, draws, book, objection_codes, parallelism)
    # Every dataset and the truth read the population: compute it once, on the executors.
    people = population(spark, settings, layout, draws, parallelism).persist(StorageLevel.MEMORY_AND_DISK)
    landing_path.mkdir(parents=True, exist_ok=True)
    staging = Path(staging_folder(str(landing_path)))
    created: list[Path] = []
    try:
        with stage(logger, "synth_people", people=settings.people, practices=layout.practices, providers=layout.providers):
            created.append(truth_path / TRUTH_PEOPLE)
            store.write(people_truth(people), str(truth_path / TRUTH_PEOPLE), mode="overwrite")
        with stage(logger, "synth_records", format=settings.format) as metrics:
            created.append(truth_path / TRUTH_RECORDS)
            store.write(
                _landing_and_truth(plan, people, staging, public_key),
                str(truth_path / TRUTH_RECORDS),
                mode="overwrite",
                partition_by=["dataset"],
            )
            rows, files = _written(store.read(str(truth_path / TRUTH_RECORDS)))
            metrics.update(rows=sum(rows.values()), files=files, **{f"rows_{d}": n for d, n in rows.items()})
        _publish(staging, landing_path, created)
    except BaseException:
        for path in created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        people.unpersist()
        shutil.rmtree(staging, ignore_errors=True)
    return SynthResult(str(landing_path), str(truth_path), settings.people, layout.practices, layout.providers, rows, files)


def _landing_and_truth(plan: Plan, people: DataFrame, staging: Path, public_key: str | None) -> DataFrame:
    """All five datasets' files (written as a side effect) and their truth rows, one job."""
    settings = plan.settings
    truths = []
    for rows in all_rows(people, plan):
        fmt = FileFormat(
            dataset=rows.dataset,
            kind=settings.format,
            orders=file_variants(rows.dataset, settings.seed),
            row_group=settings.files.parquet_row_group,
            public_key=public_key,
        )
        truths.append(write(prepare(rows, plan, fmt), str(staging), fmt))
    return reduce(DataFrame.unionByName, truths)


def _written(records: DataFrame) -> tuple[dict[str, int], int]:
    """Rows per dataset and the number of files, from the truth (a handful of rows)."""
    summary = records.groupBy("dataset").agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("file").alias("files"))
    collected = summary.collect()
    return {r["dataset"]: r["rows"] for r in sorted(collected)}, sum(r["files"] for r in collected)
