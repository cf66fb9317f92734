"""The audit trail: an append-only Delta table of every release, refusal, access and erasure.

Rows are only ever appended (this module has no other write), so the table's Delta history
is itself evidence: a removed row shows as a commit that is not an append. A row says who
asked, under which agreement, what was asked for, when, how many rows left and why a
request was refused. It holds no record content: a subject access row names its subject by
the linkage hash of the NHS number (hex), which only the safe haven can recompute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field, replace

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from caredata_spark.errors import CaredataError
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import AUDIT, table_path

RELEASE, SUBJECT_ACCESS, PUBLICATION, ERASURE = "release", "subject_access", "publication", "erasure"
QUARANTINE_DECRYPT = "quarantine_decrypt"  # an operator reading rejected lines in clear
STARTED, DONE, REFUSED, FAILED = "started", "done", "refused", "failed"

SCHEMA = StructType(
    [
        StructField("at", TimestampType()),
        StructField("action", StringType()),
        StructField("outcome", StringType()),
        StructField("requester", StringType()),
        StructField("agreement_id", StringType()),
        StructField("flow", StringType()),
        StructField("legal_basis", StringType()),
        StructField("approvers", ArrayType(StringType())),
        StructField("fields", ArrayType(StringType())),
        StructField("rows", LongType()),
        StructField("release_id", StringType()),
        StructField("reason", StringType()),
        StructField("subject", StringType()),
    ]
)


@dataclass(frozen=True)
class AuditEntry:
    """One audit row; field order is the table's column order."""

    at: dt.datetime
    action: str
    outcome: str
    requester: str
    agreement_id: str | None = None
    flow: str | None = None
    legal_basis: str | None = None
    approvers: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    rows: int | None = None
    release_id: str | None = None
    reason: str | None = None
    subject: str | None = None


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # session time zone is UTC


def request_id(at: dt.datetime, prefix: str = "") -> str:
    """A request's id from its instant (microseconds, UTC), e.g. a release's delivery folder."""
    return f"{prefix}{at:%Y%m%dT%H%M%S%fZ}"


def stamped(entry: AuditEntry, **changes: object) -> AuditEntry:
    """The entry with `changes`, stamped now: the next row of the same request."""
    return replace(entry, at=now(), **changes)  # type: ignore[arg-type]


def failure_reason(err: BaseException) -> str:
    """What a `failed` row says: a platform error's own message, else only the error's type,
    because Spark's text can quote row values."""
    return str(err) if isinstance(err, CaredataError) else type(err).__name__


def record(spark: SparkSession, store: DeltaStore, warehouse: str, entry: AuditEntry) -> None:
    """Append one row to the audit table (created on first use)."""
    row = spark.createDataFrame([astuple(entry)], SCHEMA)
    store.write(row, table_path(warehouse, AUDIT), mode="append")


@contextmanager
def audited(spark: SparkSession, store: DeltaStore, warehouse: str, entry: AuditEntry) -> Iterator[None]:
    """Record `entry` as started, and as failed if the block raises (then re-raise): a request
    that died part-way is in the trail too. The caller records `done` with its figures."""
    record(spark, store, warehouse, stamped(entry, outcome=STARTED))
    try:
        yield
    except BaseException as err:
        record(spark, store, warehouse, stamped(entry, outcome=FAILED, reason=failure_reason(err)))
        raise
