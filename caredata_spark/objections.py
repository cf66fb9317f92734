"""Patients' objections: type 1 enforced at the door, type 2 kept for releases.

Objections arrive as coded GP events. For each patient record key and objection type the
latest dated code decides: a dissent is in force until a later withdrawal (a dissent and
a withdrawal on the same day count as a dissent: the safer reading).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from caredata_spark.config import CONF_DIR, ConfigError, from_yaml
from caredata_spark.identity import with_nhs_hash
from caredata_spark.keyed_hash import KeyFrame
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import OBJECTIONS, table_path

DEFAULT_CODES = CONF_DIR / "objections.yaml"
DISSENT, WITHDRAWN = "dissent", "withdrawn"
EVENTS_COLUMNS = ("record_key", "objection_type", "status", "event_date", "submission_id", "h_nhs")
EVENTS_SCHEMA = (
    "record_key string, objection_type int, status string, event_date date, submission_id string, h_nhs binary"
)


@dataclass(frozen=True)
class TypeCodes:
    dissent: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.dissent:
            raise ConfigError("dissent: at least one code is required")
        overlap = set(self.dissent) & set(self.withdrawn)
        if overlap:
            raise ConfigError(f"withdrawn: codes also listed as dissent: {sorted(overlap)}")


@dataclass(frozen=True)
class ObjectionCodes:
    type1: TypeCodes
    type2: TypeCodes

    @property
    def all(self) -> list[str]:
        return [c for t in (self.type1, self.type2) for c in (*t.dissent, *t.withdrawn)]


def load_objection_codes(path: str | Path | None = None) -> ObjectionCodes:
    source = Path(path) if path else DEFAULT_CODES
    return from_yaml(ObjectionCodes, source)


def objection_events(codes: ObjectionCodes, linkage_key: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """Validated GP events -> one row per objection code event, with the linkage hash of
    the patient's NHS number (`h_nhs`, as the linked sets carry it) and no identifier.

    The hash is what lets a type 2 objection reach the patient's hospital records when
    their GP record is not in the link map: a type 1 objector's GP rows never reach
    linkage, yet their type 2 objection still binds their hospital data.
    """
    by_code: dict[str, tuple[int, str]] = {}
    for number, type_codes in ((1, codes.type1), (2, codes.type2)):
        by_code.update({c: (number, DISSENT) for c in type_codes.dissent})
        by_code.update({c: (number, WITHDRAWN) for c in type_codes.withdrawn})
    types = F.create_map(*[F.lit(x) for c, (n, _) in by_code.items() for x in (c, n)])
    statuses = F.create_map(*[F.lit(x) for c, (_, s) in by_code.items() for x in (c, s)])

    def transform(events: DataFrame) -> DataFrame:
        code = F.col("SNOMED_CODE")
        return (
            events.filter(code.isin(*by_code) & F.col("EVENT_DATE").isNotNull())
            .transform(with_nhs_hash(linkage_key))
            .select(
                "record_key",
                F.element_at(types, code).alias("objection_type"),
                F.element_at(statuses, code).alias("status"),
                F.col("EVENT_DATE").alias("event_date"),
                "submission_id",
                "h_nhs",
            )
        )

    return transform


def in_force(as_of: Column | None = None) -> Callable[[DataFrame], DataFrame]:
    """Objection events -> (record_key, objection_type, since) where a dissent is in force.

    `as_of` (a date) ignores later events, so a release sees the state on its own date.
    One window per (key, type): a shuffle on the key, which scales with the population.
    """
    latest_first = Window.partitionBy("record_key", "objection_type").orderBy(
        F.col("event_date").desc(), (F.col("status") == DISSENT).desc()
    )

    def transform(events: DataFrame) -> DataFrame:
        dated = events if as_of is None else events.filter(F.col("event_date") <= as_of)
        latest = dated.withColumn("rank", F.row_number().over(latest_first)).filter(F.col("rank") == 1)
        return latest.filter(F.col("status") == DISSENT).select(
            "record_key", "objection_type", F.col("event_date").alias("since")
        )

    return transform


def type1_objectors(events: DataFrame) -> DataFrame:
    """Record keys whose latest type 1 code is a dissent."""
    return (
        events.transform(in_force())
        .filter(F.col("objection_type") == 1)
        .select("record_key")
        .distinct()
    )


def _objector_match(objectors: DataFrame, matched_on: Column | None, how: str) -> Callable[[DataFrame], DataFrame]:
    def transform(df: DataFrame) -> DataFrame:
        keys = objectors.select(F.col("record_key").alias("_objector"))
        key = F.col("record_key") if matched_on is None else matched_on
        return df.join(keys, on=key == F.col("_objector"), how=how)

    return transform


def without(objectors: DataFrame, matched_on: Column | None = None) -> Callable[[DataFrame], DataFrame]:
    """Drop every row of the objectors' record keys (`matched_on`, default `record_key`).

    Objectors are a few percent of the population, too many to broadcast safely at
    national scale: a shuffle anti-join (AQE may still broadcast a small run's set).
    """
    return _objector_match(objectors, matched_on, "left_anti")


def only(objectors: DataFrame, matched_on: Column | None = None) -> Callable[[DataFrame], DataFrame]:
    """The rows `without` drops: a semi-join on the same key."""
    return _objector_match(objectors, matched_on, "left_semi")


def without_objection_codes(codes: ObjectionCodes) -> Callable[[DataFrame], DataFrame]:
    """GP events other than objection codes: a recipient learns nothing clinical from one,
    only that the patient once objected (a withdrawn objection included)."""
    return lambda events: events.filter(~F.col("SNOMED_CODE").isin(*codes.all))


def objection_history(store: DeltaStore, warehouse: str) -> DataFrame:
    """Every objection event ingested so far (EVENTS_COLUMNS); empty before the first.
    Events ingested before `h_nhs` was kept read it as null."""
    path = table_path(warehouse, OBJECTIONS)
    if not store.exists(path):
        return store.spark.createDataFrame([], EVENTS_SCHEMA)
    events = store.read(path)
    if "h_nhs" not in events.columns:
        events = events.withColumn("h_nhs", F.lit(None).cast("binary"))
    return events.select(*EVENTS_COLUMNS)
