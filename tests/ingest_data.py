"""Hand-written landing zones for ingest tests: valid NHS numbers, files, one ingest call."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from caredata_spark.config import KeySettings, Settings
from caredata_spark.ingest import IngestResult, ingest
from caredata_spark.storage import DeltaStore

VALID_NHS = "9434765919"
OTHER_NHS = "4010232137"
TYPE1_NHS = "4505577104"


def write(landing: Path, dataset: str, submitter: str, name: str, lines: list[str]) -> Path:
    path = landing / dataset / submitter / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines and lines[-1] else ""), encoding="utf-8")
    return path


def run(spark: SparkSession, store: DeltaStore, keys: KeySettings, landing: Path, warehouse: Path) -> IngestResult:
    return ingest(spark, store, Settings(keys=keys), str(landing), str(warehouse))
