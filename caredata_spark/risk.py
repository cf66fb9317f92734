"""Re-identification risk of a record-level release: k-anonymity and prosecutor risk.

Records are grouped into equivalence classes by their quasi-identifiers (what an attacker
may know of a target: age, sex, area, dates of care). As in ARX's prosecutor model, a
record's risk is 1 / (size of its class); the report gives the smallest class, the records
in classes smaller than the threshold k, and the highest and average record risk.

Unlike a cross-sectional table, a release holds many records per person, so a class is
measured in distinct people: ten admissions of one patient are a class of one, not ten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from caredata_spark.agreements import GENERALISED, IDENTIFIABLE
from caredata_spark.contract import Dataset

# what an attacker may know of a person; the released date columns are added per dataset
QUASI_IDENTIFIERS = (*GENERALISED, *IDENTIFIABLE)


@dataclass(frozen=True)
class RiskReport:
    quasi_identifiers: tuple[str, ...]
    k_threshold: int
    records: int
    classes: int
    smallest_class: int  # people in the smallest class (the release's k)
    records_at_risk: int  # records in classes of fewer than k_threshold people
    highest_risk: float  # 1 / smallest_class
    average_risk: float  # mean over records of 1 / people in the record's class

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quasi_identifiers": list(self.quasi_identifiers)}


def quasi_identifiers(dataset: Dataset, fields: Sequence[str]) -> tuple[str, ...]:
    """The released fields an attacker could know: demographics, area, provider, dates."""
    return tuple(f for f in fields if f in QUASI_IDENTIFIERS or f in dataset.dates)


def risk_report(
    released: DataFrame, qis: Sequence[str], person: str, k_threshold: int
) -> RiskReport:
    """The report of `released` over `qis`, people counted by the `person` column.

    One aggregation to classes (a shuffle on the quasi-identifiers) and one to a single
    row; only that row reaches the driver. Records without a person count as a person each.
    """
    who = F.coalesce(F.col(person), F.concat(F.lit("record:"), F.monotonically_increasing_id()))
    classes = (
        released.withColumn("_who", who)
        .groupBy(*qis)
        .agg(F.count(F.lit(1)).alias("records"), F.count_distinct("_who").alias("people"))
    )
    total = classes.agg(
        F.sum("records").alias("records"),
        F.count(F.lit(1)).alias("classes"),
        F.min("people").alias("smallest"),
        F.sum(F.when(F.col("people") < k_threshold, F.col("records")).otherwise(0)).alias("at_risk"),
        F.sum(F.col("records") / F.col("people")).alias("risk_sum"),
    ).first()
    assert total is not None  # a global aggregate has exactly one row, even over no rows
    records, smallest = int(total["records"] or 0), int(total["smallest"] or 0)
    return RiskReport(
        quasi_identifiers=tuple(qis),
        k_threshold=k_threshold,
        records=records,
        classes=int(total["classes"]) if records else 0,
        smallest_class=smallest,
        records_at_risk=int(total["at_risk"] or 0),
        highest_risk=round(1 / smallest, 6) if smallest else 0.0,
        average_risk=round(float(total["risk_sum"]) / records, 6) if records else 0.0,
    )
