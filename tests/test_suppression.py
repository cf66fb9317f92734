"""Primary rules and rounding, and secondary suppression checked by the LP audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from disclosure_tables import (
    cells_with_margins,
    flat_shape,
    interiors,
    marked,
    oracle_rounded,
    rate_cells,
    rate_interiors,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.aggregates import (
    COUNT,
    DENOMINATOR,
    GROUPING_ID,
    MEASURE,
    TOTAL,
    VALUE,
    TableShape,
    grouping_sets,
    table_cells,
)
from caredata_spark.disclosure_audit import (
    FORCED,
    INHERITED,
    LOWER,
    PRIMARY,
    SUBTABLE,
    SUPPRESSED,
    UPPER,
    DisclosureRisk,
    ProtectionRule,
    audit,
    audit_subtable,
    require_protected,
)
from caredata_spark.disclosure import protect_table
from caredata_spark.publication_tables import Dimension, Filter, Measure, Rate, TableDefinition
from caredata_spark.suppression import (
    ROUNDED,
    SUPPRESSED_MARK,
    DisclosurePolicy,
    mark_primary,
    protect,
    protect_subtable,
    publication,
    suppression_summary,
)

POLICY = DisclosurePolicy()
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("rounding", ["nearest5", "midpoint6"])
def test_primary_flags_and_rounding_match_the_rules(spark: SparkSession, rounding: str) -> None:
    counts = spark.range(0, 2000).select(F.col("id").alias(VALUE))
    got = counts.transform(mark_primary(DisclosurePolicy(rounding=rounding))).toPandas()
    value, published = got[VALUE].to_numpy(), got[ROUNDED].to_numpy()
    assert (published == oracle_rounded(value, rounding)).all()
    assert (got[PRIMARY] == ((value >= 1) & (value <= 7))).all()
    if rounding == "nearest5":
        assert (published % 5 == 0).all() and (np.abs(published - value) <= 2).all()
    else:
        positive = value > 0
        assert (published[positive] % 6 == 3).all()
        assert ((value - published >= -2) & (value - published <= 3)).all()
    assert (published[value == 0] == 0).all()
    # an attacker's interval from a published count always holds the true count
    shown = ~got[PRIMARY]
    assert ((got[LOWER] <= value) & (value <= got[UPPER]))[shown].all()


def test_one_small_cell_is_protected_by_a_rectangle() -> None:
    interior = np.array([[3, 20, 30], [25, 40, 50], [35, 45, 60]])
    cells = protect_subtable(marked(cells_with_margins(interior)), flat_shape(2), POLICY)
    hidden = set(map(tuple, cells.loc[cells[SUPPRESSED], ["d0", "d1"]].to_numpy()))
    # the 3, the smallest partners in its row (20) and column (25), and the 40 closing both
    assert hidden == {("c0", "c0"), ("c0", "c1"), ("c1", "c0"), ("c1", "c1")}


def test_a_sub_tables_pattern_does_not_depend_on_its_row_order() -> None:
    # equal counts tie as complements; shuffled, this table used to hide another cell
    interior = np.array([[1, 5, 0], [1, 12, 9], [12, 12, 12], [2, 5, 7], [2, 20, 0]])
    cells = marked(cells_with_margins(interior))
    shuffled = cells.sample(frac=1.0, random_state=1)
    first = protect_subtable(cells, flat_shape(2), POLICY)
    second = protect_subtable(shuffled, flat_shape(2), POLICY)
    assert second.index.equals(shuffled.index)  # returned in the order given
    assert first[SUPPRESSED].equals(second[SUPPRESSED].sort_index())


def protected_and_audited(
    interior: np.ndarray, policy: DisclosurePolicy
) -> tuple[pd.DataFrame, pd.DataFrame]:
    shape = flat_shape(interior.ndim)
    cells = marked(cells_with_margins(interior), rounding=policy.rounding)
    if policy.secondary:
        cells = cells.assign(
            **{SUPPRESSED: protect_subtable(cells, shape, policy)[SUPPRESSED].to_numpy()}
        )
    else:
        cells = cells.assign(**{SUPPRESSED: cells[PRIMARY]})
    return cells, audit_subtable(cells, shape, policy.protection, exact=True)


@PROPERTY
@given(interiors(ndim=2, max_side=6), st.sampled_from(["nearest5", "midpoint6"]))
def test_secondary_suppression_defeats_subtraction_on_2d_tables(
    interior: np.ndarray, rounding: str
) -> None:
    cells, result = protected_and_audited(interior, DisclosurePolicy(rounding=rounding))
    assert result["protected"].all()
    assert cells.loc[cells[PRIMARY], SUPPRESSED].all()
    assert not cells.loc[cells[VALUE] == 0, SUPPRESSED].any()


@PROPERTY
@given(interiors(ndim=3, max_side=4))
def test_secondary_suppression_defeats_subtraction_on_3d_tables(interior: np.ndarray) -> None:
    cells, result = protected_and_audited(interior, POLICY)
    assert result["protected"].all()
    assert cells.loc[cells[PRIMARY], SUPPRESSED].all()


@PROPERTY
@given(rate_interiors(ndim=2, max_side=4))
def test_a_rate_tables_measures_are_protected_together(
    interior: tuple[np.ndarray, np.ndarray],
) -> None:
    # one sub-table, one model: an attacker also knows numerator <= denominator per cell
    cells = rate_cells(*interior)
    cells[SUPPRESSED] = protect_subtable(cells, flat_shape(2), POLICY)[SUPPRESSED].to_numpy()
    assert cells.loc[cells[PRIMARY], SUPPRESSED].all()
    assert audit_subtable(cells, flat_shape(2), POLICY.protection, exact=True)["protected"].all()


def with_giveaway(interior: np.ndarray, small: int, partner: int) -> np.ndarray:
    """Plant a line [small, partner, 0, ...] whose total rounds like the partner: with
    small + partner <= 12 both publish as 10, so subtraction pins small to 1..4."""
    planted = interior.copy()
    line = (0,) * (interior.ndim - 1)
    planted[line] = 0
    planted[(*line, 0)], planted[(*line, 1)] = small, partner
    return planted


@PROPERTY
@given(
    st.integers(2, 3).flatmap(lambda ndim: interiors(ndim=ndim, max_side=4)),
    st.sampled_from([(1, 8), (3, 8), (4, 8), (2, 9), (3, 9)]),
)
def test_audit_finds_the_planted_giveaway_only_without_secondary_suppression(
    interior: np.ndarray, planted: tuple[int, int]
) -> None:
    table = with_giveaway(interior, *planted)
    _, primary_only = protected_and_audited(table, DisclosurePolicy(secondary=False))
    assert not primary_only["protected"].all()
    _, secondary = protected_and_audited(table, POLICY)
    assert secondary["protected"].all()


# --- the Spark pipeline on a hierarchical table ------------------------------------------

SHAPE = TableShape(hierarchies=(("area", "district"), ("age",), ("sex",)), split_by="area")


def random_interior(seed: int = 7) -> list[tuple[str, str, str, str, int]]:
    """A fixed random area > district x age x sex interior with many small counts."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(5):
        for d in range(int(rng.integers(1, 5))):
            for age in ("0-17", "18-64", "65+"):
                for sex in ("1", "2"):
                    value = int(rng.choice([0, 1, 3, 6, 9, 14, 40]))
                    rows.append((f"A{a}", f"A{a}D{d}", age, sex, value))
    return rows


def hierarchical_cells(
    spark: SparkSession, rows: list[tuple] | None = None, shape: TableShape = SHAPE
) -> DataFrame:
    """Cells, margins included, of an interior: one column per dimension of `shape`
    (default area > district x age x sex), then the count."""
    dims = list(shape.dimensions)
    interior = spark.createDataFrame(
        rows or random_interior(), ", ".join(f"{d} string" for d in dims) + ", n long"
    )
    summed = (
        interior.where(F.col("n") > 0)
        .groupingSets(grouping_sets(shape), *dims)
        .agg(F.grouping_id(*dims).cast("int").alias(GROUPING_ID), F.sum("n").alias(VALUE))
    )
    return summed.select(
        *(F.coalesce(F.col(d), F.lit(TOTAL)).alias(d) for d in dims),
        GROUPING_ID,
        F.lit(COUNT).alias(MEASURE),
        F.col(VALUE).cast("long").alias(VALUE),
    )


def whole_table_attack(protected: DataFrame, shape: TableShape = SHAPE) -> pd.DataFrame:
    """The LP audit on the whole table at once, not sub-table by sub-table."""
    whole = protected.toPandas().assign(**{INHERITED: False, SUBTABLE: "whole"})
    flat = TableShape(hierarchies=shape.hierarchies)
    return audit_subtable(whole, flat, POLICY.protection, exact=True)


def test_protected_hierarchical_table_passes_the_audit_and_publishes_no_small_count(
    spark: SparkSession,
) -> None:
    cells = hierarchical_cells(spark)
    protected = cells.transform(protect(SHAPE, POLICY)).cache()
    require_protected(protected.transform(audit(SHAPE, POLICY.protection)), SHAPE, "demo")

    # the top-down (modular) protection also holds when the whole table is attacked at once
    assert whole_table_attack(protected)["protected"].all()

    summary = suppression_summary(protected)
    assert summary["cells"] == cells.count() and summary["primary"] > 0 and summary["secondary"] > 0

    public = protected.transform(publication(SHAPE))
    assert VALUE not in public.columns
    joined = public.join(protected, on=[*SHAPE.dimensions, GROUPING_ID], how="inner").toPandas()
    small = joined[VALUE].between(1, 7)
    assert (joined.loc[small, "count"] == SUPPRESSED_MARK).all()
    shown = joined["count_value"].dropna()
    assert ((shown == 0) | ((shown >= 10) & (shown % 5 == 0))).all()
    assert (joined["count"] == SUPPRESSED_MARK).sum() == summary["primary"] + summary["secondary"]


def test_a_small_total_over_many_small_cells_is_hidden_at_the_level_above(
    spark: SparkSession,
) -> None:
    # A0 = 10 people over seven districts: published, it would pin each district to 1..6
    # however much of A0 is hidden, so A0's sub-table forces its total to be suppressed
    crowded = [("A0", f"A0D{d}", "all", "1", n) for d, n in enumerate([1, 1, 1, 1, 2, 2, 2])]
    large = [
        (f"A{a}", f"A{a}D{d}", "all", s, 40 + 3 * d)
        for a in (1, 2)
        for d in range(3)
        for s in ("1", "2")
    ]
    protected = hierarchical_cells(spark, crowded + large).transform(protect(SHAPE, POLICY)).cache()
    area_total = protected.where(
        (F.col("area") == "A0")
        & (F.col("district") == TOTAL)
        & (F.col("sex") == "1")
        & (F.col("age") == "all")
    )
    assert area_total.select(SUPPRESSED).first()[0]
    require_protected(protected.transform(audit(SHAPE, POLICY.protection)), SHAPE, "demo")
    assert whole_table_attack(protected)["protected"].all()


AREA_SEX = TableShape(hierarchies=(("area", "district"), ("sex",)), split_by="area")
# A review's table. Each area's sub-table, protected and audited alone, takes its area
# total as its published interval: A0's 50 as 48-52, A1's 45 as 43-47. But the national
# 90 (88-92) is their sum, so A0 is 48 or 49 and A1 43 or 44, which no sub-table sees.
SPLIT_PINNED = [
    ("A0", "A0D0", "1", 3),
    ("A0", "A0D1", "1", 40),
    ("A0", "A0D1", "2", 3),
    ("A0", "A0D2", "1", 3),
    ("A1", "A1D0", "1", 3),
    ("A1", "A1D1", "2", 40),
]


def test_the_audit_attacks_a_split_table_whole(spark: SparkSession) -> None:
    # what sub-table by sub-table protection published: these six counts, all else hidden
    shown = [
        ("A0", "A0D1", TOTAL),
        ("A0", TOTAL, TOTAL),
        ("A1", TOTAL, TOTAL),
        (TOTAL, TOTAL, "1"),
        (TOTAL, TOTAL, "2"),
        (TOTAL, TOTAL, TOTAL),
    ]
    is_shown = F.struct("area", "district", "sex").isin(
        *(F.struct(*(F.lit(v) for v in key)) for key in shown)
    )
    published = (
        hierarchical_cells(spark, SPLIT_PINNED, AREA_SEX)
        .transform(mark_primary(POLICY))
        .withColumn(FORCED, F.lit(False))
        .withColumn(SUPPRESSED, ~is_shown)
    )
    # A0's districts then sum to 48-49 with A0D1 at 43-47: A0D0 and A0D2 (3 each) are 1..5
    with pytest.raises(DisclosureRisk, match=r"not publishable: area=A0, district=A0D[02], "):
        require_protected(published.transform(audit(AREA_SEX, POLICY.protection)), AREA_SEX, "demo")


def test_a_split_table_is_protected_as_a_whole(spark: SparkSession) -> None:
    protected = (
        hierarchical_cells(spark, SPLIT_PINNED, AREA_SEX).transform(protect(AREA_SEX, POLICY)).cache()
    )
    require_protected(protected.transform(audit(AREA_SEX, POLICY.protection)), AREA_SEX, "demo")
    assert whole_table_attack(protected, AREA_SEX)["protected"].all()
    # the sub-tables alone leave A0D1's total shown; the whole-table pass hides it too
    a0d1 = protected.where((F.col("district") == "A0D1") & (F.col("sex") == TOTAL))
    assert a0d1.select(SUPPRESSED).first()[0]


@st.composite
def split_tables(draw: st.DrawFn) -> list[tuple[str, str, str, str, int]]:
    """Small area > district x age x sex interiors, counts as in the review's search."""
    count = st.sampled_from([0, 1, 2, 3, 6, 9, 12, 14, 40])
    areas = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))  # districts of each
    ages = draw(st.integers(1, 2))
    return [
        (f"A{a}", f"A{a}D{d}", f"age{g}", sex, draw(count))
        for a, districts in enumerate(areas)
        for d in range(districts)
        for g in range(ages)
        for sex in ("1", "2")
    ]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_tables())
def test_split_tables_withstand_the_whole_table_attack(
    spark: SparkSession, rows: list[tuple[str, str, str, str, int]]
) -> None:
    # protected and audited sub-table by sub-table, about one such table in eight
    # published a hidden count narrower than 8 values
    protected = hierarchical_cells(spark, rows).transform(protect(SHAPE, POLICY)).cache()
    attacked = whole_table_attack(protected)
    assert attacked["protected"].all(), attacked[~attacked["protected"]].to_string()
    protected.unpersist()


def test_a_split_rate_table_is_protected_with_numerator_below_denominator(
    spark: SparkSession,
) -> None:
    # a review's table: each measure protected on its own pinned A2D1's denominator (1) to
    # 1..4, since A2's hidden numerators (5 and 3 of 6 and 3) sum to a published 8-12
    districts = [  # area, district, denominator, numerator
        ("A0", "A0D0", 9, 3),
        ("A0", "A0D1", 9, 8),
        ("A0", "A0D2", 6, 1),
        ("A0", "A0D3", 12, 9),
        ("A1", "A1D0", 1, 0),
        ("A1", "A1D1", 6, 6),
        ("A1", "A1D2", 9, 9),
        ("A1", "A1D3", 6, 0),
        ("A2", "A2D0", 6, 5),
        ("A2", "A2D1", 1, 0),
        ("A2", "A2D2", 3, 3),
    ]
    records = spark.createDataFrame(
        [
            (f"{district}-{i}", area, district, "true" if i < numerator else "false")
            for area, district, denominator, numerator in districts
            for i in range(denominator)
        ],
        "person_id string, area string, district string, admitted string",
    )
    definition = TableDefinition(
        title="Admitted",
        source="test",
        measure=Measure(count="persons"),
        dimensions=[Dimension("area"), Dimension("district", within="area")],
        rate=Rate(numerator=[Filter(column="admitted", values=["true"])], per=1000),
        split_by="area",
    )
    shape = TableShape.of(definition)
    protected = (
        records.transform(table_cells(definition, "admitted"))
        .transform(protect(shape, POLICY))
        .cache()
    )
    require_protected(protected.transform(audit(shape, POLICY.protection)), shape, "admitted")
    attacked = whole_table_attack(protected, shape)  # both measures: the pairs included
    assert attacked["protected"].all() and (attacked[MEASURE] == DENOMINATOR).any()


def test_the_suppression_pattern_does_not_depend_on_row_order(spark: SparkSession) -> None:
    # a re-run must hide the same cells: two patterns of one table could be subtracted;
    # shuffled, this table's sub-tables used to get another pattern (11 cells differed)
    cells = hierarchical_cells(spark, random_interior(seed=3))
    shuffled = cells.orderBy(F.rand(5)).repartition(3)
    keys = [*SHAPE.dimensions, MEASURE]
    first, second = (
        frame.transform(protect(SHAPE, POLICY)).select(*keys, SUPPRESSED)
        for frame in (cells, shuffled)
    )
    assert_df_equality(first, second, ignore_row_order=True)


def test_primary_only_hierarchical_table_fails_the_audit(spark: SparkSession) -> None:
    policy = DisclosurePolicy(secondary=False)
    protected = hierarchical_cells(spark).transform(protect(SHAPE, policy))
    with pytest.raises(DisclosureRisk, match="table demo is not publishable: area="):
        require_protected(protected.transform(audit(SHAPE, policy.protection)), SHAPE, "demo")


def test_rates_are_published_only_from_published_counts(spark: SparkSession) -> None:
    shape = TableShape(hierarchies=(("practice",),))
    rows = [  # practice, measure, true value, suppressed
        ("P1", COUNT, 12, False),
        ("P1", DENOMINATOR, 1000, False),
        ("P2", COUNT, 5, True),
        ("P2", DENOMINATOR, 800, False),
        ("P3", COUNT, 40, True),
        ("P3", DENOMINATOR, 900, False),
    ]
    protected = spark.createDataFrame(
        [(p, 1, m, v, int(oracle_rounded(np.array([v]), "nearest5")[0]), s) for p, m, v, s in rows],
        f"practice string, {GROUPING_ID} int, {MEASURE} string, {VALUE} long, "
        f"{ROUNDED} long, {SUPPRESSED} boolean",
    )
    got = {
        r["practice"]: r for r in protected.transform(publication(shape, rate_per=1000)).collect()
    }
    assert (got["P1"]["count"], got["P1"]["denominator"], got["P1"]["rate"]) == (
        "10",
        "1000",
        "10.0",
    )
    assert got["P2"]["rate"] == SUPPRESSED_MARK and got["P2"]["rate_value"] is None
    assert got["P3"]["count"] == SUPPRESSED_MARK and got["P3"]["rate"] == SUPPRESSED_MARK


def test_policy_rejects_unknown_rounding() -> None:
    with pytest.raises(ValueError, match="rounding: expected one of nearest5, midpoint6"):
        DisclosurePolicy(rounding="nearest10")
    with pytest.raises(ValueError, match="min_width"):
        ProtectionRule(min_width=0)


def test_protect_table_runs_the_whole_engine_from_records(spark: SparkSession) -> None:
    people = [
        (f"{area}-{district}-{age}-{sex}-{i}", area, district, age, sex)
        for area, district, age, sex, n in random_interior(seed=3)
        for i in range(n)
    ]
    records = spark.createDataFrame(
        people, "person_id string, area string, district string, age string, sex string"
    )
    definition = TableDefinition(
        title="People",
        source="test",
        measure=Measure(count="persons"),
        dimensions=[
            Dimension("area"),
            Dimension("district", within="area"),
            Dimension("age"),
            Dimension("sex"),
        ],
        split_by="area",
    )
    table = protect_table(records, definition, POLICY, "people")
    public = table.public.toPandas()
    assert VALUE not in public.columns and len(public) == table.summary["cells"]
    assert (public["count"] == SUPPRESSED_MARK).sum() == table.summary["primary"] + table.summary[
        "secondary"
    ]
    grand = public[(public[list(SHAPE.dimensions)] == TOTAL).all(axis=1)]
    assert grand["count"].tolist() == [
        str(int(oracle_rounded(np.array([len(people)]), "nearest5")[0]))
    ]
