"""`linkage/report` rows from a hand-written run: every per-record metric at its grain."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.linkage.report import REPORT_DDL, build_report
from caredata_spark.linkage.scoring import ScoredFit

OUTCOMES_DDL = (
    "source string, provider string, match_step string, match_weight double, best_weight double, "
    "ambiguous_step string"
)
PER_RECORD = ("records", "ambiguous", "score_distribution", "expected_false_links")


@pytest.fixture(scope="module")
def report(spark: SparkSession) -> DataFrame:
    outcomes = spark.createDataFrame(
        [
            ("hes_apc", "RX1", "det_1", None, None, None),
            ("hes_apc", "RX1", "det_1", None, None, None),
            ("hes_apc", "RX1", "det_2", None, None, "det_1"),  # ambiguous at det_1, then det_2
            ("hes_apc", "RX1", "scored", 10.0, 10.4, "det_6"),
            ("hes_apc", "RX2", "scored", 12.0, 12.9, None),
            ("hes_apc", "RX2", None, None, 3.5, None),  # scored below the threshold
            ("hes_apc", "RX2", None, None, -99.0, None),  # folded into the lowest bin
            ("hes_op", "RY1", None, None, None, "det_3"),
            ("gp", "A81001", "gp_registration", None, None, None),
        ],
        OUTCOMES_DDL,
    )
    new_persons = spark.createDataFrame([("p1", "gp"), ("p2", "hes")], "person_id string, origin string")
    return build_report(spark, outcomes, new_persons, ScoredFit(model=None, min_weight=9.97), run=4)


def test_each_per_record_metric_is_counted_at_its_grain(spark: SparkSession, report: DataFrame) -> None:
    n = None
    expected = spark.createDataFrame(
        [
            (4, "records", "hes_apc", "RX1", "det_1", n, 2.0),
            (4, "records", "hes_apc", "RX1", "det_2", n, 1.0),
            (4, "records", "hes_apc", "RX1", "scored", n, 1.0),
            (4, "records", "hes_apc", "RX2", "scored", n, 1.0),
            (4, "records", "hes_apc", "RX2", "unlinked", n, 2.0),
            (4, "records", "hes_op", "RY1", "unlinked", n, 1.0),
            (4, "records", "gp", "A81001", "gp_registration", n, 1.0),
            (4, "ambiguous", "hes_apc", "RX1", "det_2", "det_1", 1.0),
            (4, "ambiguous", "hes_apc", "RX1", "scored", "det_6", 1.0),
            (4, "ambiguous", "hes_op", "RY1", "unlinked", "det_3", 1.0),
            (4, "score_distribution", "hes_apc", n, "scored", "10", 1.0),
            (4, "score_distribution", "hes_apc", n, "scored", "12", 1.0),
            (4, "score_distribution", "hes_apc", n, "unlinked", "3", 1.0),
            (4, "score_distribution", "hes_apc", n, "unlinked", "-30", 1.0),
            (4, "expected_false_links", "hes_apc", n, n, n, 1 / (1 + 2.0**10) + 1 / (1 + 2.0**12)),
        ],
        REPORT_DDL,
    )
    actual = report.filter(F.col("metric").isin(*PER_RECORD))
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_new_persons_and_the_threshold_are_reported(spark: SparkSession, report: DataFrame) -> None:
    expected = spark.createDataFrame(
        [
            (4, "new_persons", None, None, None, "gp", 1.0),
            (4, "new_persons", None, None, None, "hes", 1.0),
            (4, "threshold_weight", None, None, None, None, 9.97),
            (4, "random_pairs", None, None, None, None, 0.0),
        ],
        REPORT_DDL,
    )
    actual = report.filter(~F.col("metric").isin(*PER_RECORD))
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
