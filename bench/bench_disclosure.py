"""Disclosure control at scale: cells, protection and audit of an area > district x age x
sex table of registered people, and the information lost to secondary suppression.

The population is generated in Spark (skewed district sizes, so there are many small
cells, as in real small-area tables): about 120 postcode areas and ~2,900 districts x 19
age bands x 2 sexes, ~10^5 cells at 1M people.
"""

from __future__ import annotations

import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.aggregates import TableShape, table_cells
from caredata_spark.disclosure_audit import audit, require_protected
from caredata_spark.publication_tables import Dimension, Measure, TableDefinition
from caredata_spark.suppression import DisclosurePolicy, protect, suppression_summary

AREAS = 120
DISTRICTS_PER_AREA = 24
AGE_BANDS = 19

TABLE = TableDefinition(
    title="Registered people by district, age band and sex",
    source="bench",
    measure=Measure(count="persons"),
    dimensions=[
        Dimension("area"),
        Dimension("district", within="area"),
        Dimension("age_band"),
        Dimension("sex"),
    ],
    split_by="area",
)


def people(spark: SparkSession, n: int) -> DataFrame:
    """One row per person; district sizes fall off as 1/rank within an area."""
    ids = spark.range(0, n, numPartitions=max(2, n // 250_000))
    u = F.rand(11)
    rank = F.least(
        F.floor(F.exp(u * F.log(F.lit(DISTRICTS_PER_AREA + 1.0)))), F.lit(DISTRICTS_PER_AREA)
    )
    area = F.format_string("A%03d", (F.abs(F.hash(F.col("id"))) % AREAS).cast("int"))
    age = F.least(F.floor(F.rand(12) * F.rand(13) * 2 * AGE_BANDS), F.lit(AGE_BANDS - 1)).cast(
        "int"
    )
    return ids.select(
        F.col("id").cast("string").alias("person_id"),
        area.alias("area"),
        F.concat(area, F.lit("-"), rank.cast("int").cast("string")).alias("district"),
        F.format_string("%02d", age).alias("age_band"),
        F.when(F.rand(14) < 0.5, "1").otherwise("2").alias("sex"),
    )


def run(spark: SparkSession, people_count: int) -> dict[str, Any]:
    shape = TableShape.of(TABLE)
    started = time.perf_counter()
    cells = people(spark, people_count).transform(table_cells(TABLE, "bench")).cache()
    n_cells = cells.count()
    cells_seconds = time.perf_counter() - started

    figures: dict[str, Any] = {
        "disclosure.people": people_count,
        "disclosure.cells": n_cells,
        "disclosure.cells_seconds": round(cells_seconds, 1),
    }
    for label, policy in (
        ("primary_only", DisclosurePolicy(secondary=False)),
        ("secondary", DisclosurePolicy()),
    ):
        started = time.perf_counter()
        protected = cells.transform(protect(shape, policy)).cache()
        summary = suppression_summary(protected)
        protect_seconds = time.perf_counter() - started
        started = time.perf_counter()
        result = protected.transform(audit(shape, policy.protection)).cache()
        failing = result.where(~F.col("protected")).count()
        audit_seconds = time.perf_counter() - started
        if label == "secondary":
            require_protected(result, shape, "bench")
        suppressed = summary["primary"] + summary["secondary"]
        figures.update(
            {
                f"disclosure.{label}.suppressed_share": round(suppressed / summary["cells"], 3),
                f"disclosure.{label}.secondary_cells": summary["secondary"],
                f"disclosure.{label}.protect_seconds": round(protect_seconds, 1),
                f"disclosure.{label}.audit_seconds": round(audit_seconds, 1),
                f"disclosure.{label}.unprotected_cells": failing,
            }
        )
        protected.unpersist()
        result.unpersist()
    cells.unpersist()
    return figures


if __name__ == "__main__":
    import argparse

    from caredata_spark.config import SparkSettings
    from caredata_spark.session import build_session

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=1_000_000)
    args = parser.parse_args()
    session = build_session(SparkSettings(app_name="caredata-bench", driver_memory="6g"))
    for key, value in run(session, args.people).items():
        print(f"{key:<45} {value}")
