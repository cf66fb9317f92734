"""The landing zone: which submissions are there, and which of them are new.

A submission is identified by the SHA-256 of its bytes, so the same file landing twice (or
under another name) is one submission. Files are hashed on executors, streaming, one task
per file: a multi-GB file is never read into memory, and the driver only sees one small
record per file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from caredata_spark.contract import DATASETS
from caredata_spark.errors import UsageError

FORMATS = {".csv.enc": "csv.enc", ".csv": "csv", ".parquet": "parquet"}
HASH_BLOCK = 1 << 20

SUBMISSION_FILES = StructType(
    [
        StructField("path", StringType()),
        StructField("dataset", StringType()),
        StructField("submitter", StringType()),
        StructField("format", StringType()),
        StructField("bytes", LongType()),
        StructField("submission_id", StringType()),
    ]
)


@dataclass(frozen=True)
class LandedFile:
    path: str
    dataset: str
    submitter: str
    format: str
    bytes: int


def file_format(name: str) -> str | None:
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    return None


def landing_root(landing: str) -> Path:
    """The landing zone's folder, or a usage error naming it.

    Driver and executors open submissions as files (hashing, decryption and parsing happen
    on executors), so the landing zone is a folder all of them see: local in local mode, a
    shared or mounted file system on a cluster. An object store URI is refused rather than
    found empty, and so is a folder that is not there: a mistyped path must not look like a
    day without submissions.
    """
    scheme, sep, rest = landing.partition("://")
    if sep and scheme != "file":
        raise UsageError(
            f"landing zone {landing}: a {scheme}:// URI cannot be read as files; give a folder "
            "that the driver and every executor see (local, NFS, or the bucket mounted)"
        )
    root = Path(rest if sep else landing)
    if not root.is_dir():
        raise UsageError(f"landing zone {landing} is not a folder (does it exist, and is it mounted?)")
    return root


def discover(landing: str) -> tuple[list[LandedFile], list[str]]:
    """Files laid out as `<landing>/<dataset>/<submitter>/<file>`, and the paths that are not.

    Unknown datasets, files at the wrong depth and unknown extensions are returned as
    ignored so the caller can report them: nothing in the landing zone goes unmentioned.
    """
    root = landing_root(landing)
    found: list[LandedFile] = []
    ignored: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = path.relative_to(root).parts
        if any(part.startswith((".", "_")) for part in parts):
            continue  # hidden and in-progress uploads
        kind = file_format(path.name)
        if len(parts) != 3 or parts[0] not in DATASETS or kind is None:
            ignored.append(str(path))
            continue
        found.append(LandedFile(str(path), parts[0], parts[1], kind, path.stat().st_size))
    return found, ignored


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def hash_files(spark: SparkSession, files: list[LandedFile]) -> DataFrame:
    """One row per file with its content hash (`submission_id`), computed on executors."""
    if not files:
        return spark.createDataFrame([], SUBMISSION_FILES)
    rows = (
        spark.sparkContext.parallelize(files, min(len(files), spark.sparkContext.defaultParallelism * 4))
        .map(lambda f: (f.path, f.dataset, f.submitter, f.format, f.bytes, _sha256(f.path)))
    )
    return spark.createDataFrame(rows, SUBMISSION_FILES)


def new_submissions(ledger: DataFrame, retry_refused: bool = False) -> Callable[[DataFrame], DataFrame]:
    """Keep files whose hash the ledger has not recorded, and one file per hash.

    `retry_refused`: files the ledger records only as refused count as new, for an operator
    who fixed the platform's side of a refusal (a wrong transport key installed, say); a
    file refused for its own faults is refused again. The ledger has one row per
    submission and run (it grows with files, not people), so it is broadcast to the anti-join.
    """

    def transform(files: DataFrame) -> DataFrame:
        recorded = ledger.filter(F.col("status") == "ingested") if retry_refused else ledger
        seen = recorded.select("submission_id").distinct()
        first_per_hash = files.groupBy("submission_id").agg(F.min("path").alias("path"))
        return (
            files.join(first_per_hash, on=["submission_id", "path"], how="inner")
            .join(F.broadcast(seen), on="submission_id", how="left_anti")
            .select(*SUBMISSION_FILES.fieldNames())
        )

    return transform
