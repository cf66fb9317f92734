"""The LP audit: relations of a table, exact feasibility intervals, and the fast path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from disclosure_tables import cells_with_margins, flat_shape, interiors, marked, rate_cells
from hypothesis import HealthCheck, given, settings
from pyspark import TaskContext
from pyspark.sql import SparkSession

from caredata_spark.aggregates import DENOMINATOR, MEASURE, TOTAL, VALUE, TableShape
from caredata_spark.disclosure_audit import (
    PRIMARY,
    SUBTABLE,
    SUPPRESSED,
    AuditError,
    DisclosureRisk,
    ProtectionRule,
    Solver,
    attacker_bounds,
    audit,
    audit_subtable,
    feasibility,
    per_subtable,
    require_protected,
    structure,
)

RULE = ProtectionRule()


def one_row(values: list[int]) -> pd.DataFrame:
    """A 1-D table: the cells and their total."""
    return marked(cells_with_margins(np.array(values)))


def interval(
    cells: pd.DataFrame, suppressed: list[str], cell: str, shape: TableShape
) -> tuple[float, float]:
    cells = cells.assign(**{SUPPRESSED: cells["d0"].isin(suppressed)})
    lower, upper = attacker_bounds(cells)
    target = np.flatnonzero(cells["d0"] == cell)
    found = feasibility(
        Solver(structure(cells, shape)),
        cells[VALUE].to_numpy(float),
        lower,
        upper,
        target,
        np.array([7.0]),
        exact=True,
    )
    return float(found.lower[0]), float(found.upper[0])


def test_relations_of_a_2d_table_are_its_row_column_and_grand_totals() -> None:
    cells = cells_with_margins(np.array([[3, 9, 1], [9, 40, 2]]))
    relations = structure(cells, flat_shape(2))
    # 2 rows + total row along d1, 3 columns + total column along d0
    assert relations.children.shape[0] == 3 + 4
    equalities, lower, upper = relations.rows()
    assert not lower.any() and not upper.any()  # equalities
    assert not np.any(equalities @ cells[VALUE].to_numpy())  # true counts satisfy them all


def test_subtraction_from_rounded_neighbours_is_an_interval() -> None:
    # published: *, 10, total 10; the attacker knows the 9 is in [8, 12], the 12 in [8, 12]
    cells = one_row([3, 9])
    assert interval(cells, ["c0"], "c0", flat_shape(1)) == (1.0, 4.0)
    # suppressing the 9 as well leaves the 3 anywhere from 1 to 12 - 1
    assert interval(cells, ["c0", "c1"], "c0", flat_shape(1)) == (1.0, 11.0)


def test_midpoint6_intervals_are_wider_by_one() -> None:
    nearest5 = marked(cells_with_margins(np.array([3, 10])))
    midpoint6 = marked(cells_with_margins(np.array([3, 10])), rounding="midpoint6")
    # nearest 5: 10 in [8, 12], 13 -> 15 in [13, 17]; midpoint 6: 10 -> 9 in [8, 12],
    # 13 -> 15 in [13, 18]
    assert interval(nearest5, ["c0"], "c0", flat_shape(1)) == (1.0, 9.0)
    assert interval(midpoint6, ["c0"], "c0", flat_shape(1)) == (1.0, 10.0)


def test_non_additive_totals_only_bound_their_parts() -> None:
    # distinct persons: a person in both categories makes the total 31, not 3 + 30
    cells = marked(pd.DataFrame({"d0": ["c0", "c1", TOTAL], VALUE: [3, 30, 31]}))
    additive, bounded = flat_shape(1), TableShape(hierarchies=(("d0",),), additive=False)
    assert interval(cells, ["c0"], "c0", additive) == (1.0, 4.0)  # 30 and 30 published
    # an attacker knows only: total <= sum of parts, every part <= the total (<= 32)
    assert interval(cells, ["c0"], "c0", bounded) == (1.0, 32.0)


def test_one_model_answers_every_solve_as_a_fresh_one_would() -> None:
    # cells c0, c1 and their total; each solve changes only the objective and the bounds
    solver = Solver(structure(one_row([3, 9]), flat_shape(1)))
    maximise_c0, minimise_c0 = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0])
    published_total = np.array([[1.0, np.inf], [8.0, 12.0], [10.0, 14.0]])
    assert solver.solve(maximise_c0, published_total)[0] == pytest.approx(6.0)
    assert solver.solve(minimise_c0, published_total)[0] == pytest.approx(1.0)
    hidden_total = published_total.copy()
    hidden_total[2] = [1.0, np.inf]
    assert solver.solve(maximise_c0, hidden_total) is None  # unbounded
    x = solver.solve(maximise_c0, published_total)  # and bounded again after it
    assert x is not None and x[0] == pytest.approx(6.0) and x[2] == pytest.approx(x[0] + x[1])
    contradiction = published_total.copy()
    contradiction[[0, 2]] = [[1.0, 5.0], [30.0, 30.0]]  # parts of at most 5 + 12 cannot make 30
    with pytest.raises(AuditError, match="audit LP failed .*[Ii]nfeasible"):
        solver.solve(maximise_c0, contradiction)


def test_a_numerator_bounds_its_hidden_denominator() -> None:
    # a review's area: denominators 6, 1, 3 (total 10) and numerators 5, 0, 3 (total 8),
    # published as the engine did when it protected each measure on its own
    cells = rate_cells(np.array([5, 0, 3]), np.array([6, 1, 3]))
    shown = (cells["d0"] == TOTAL) | (cells[VALUE] == 0)
    cells[SUPPRESSED] = ~shown
    relations = structure(cells, flat_shape(1))
    assert len(relations.below) == 4  # a numerator <= denominator row per combination
    matrix, lower, upper = relations.rows()
    true = matrix @ cells[VALUE].to_numpy()
    assert ((lower <= true) & (true <= upper)).all()

    def denominator_interval(frame: pd.DataFrame) -> tuple[float, float]:
        found = audit_subtable(frame.reset_index(drop=True), flat_shape(1), RULE, exact=True)
        row = found[(found["d0"] == "c1") & (found[MEASURE] == DENOMINATOR)].iloc[0]
        return row["feasible_min"], row["feasible_max"]

    # alone, the denominators put c1 anywhere in 1..10; with the numerators, c0 + c2 hold
    # at least the 8-12 people of the numerator total, so c1 is at most 4
    assert denominator_interval(cells[cells[MEASURE] == DENOMINATOR]) == (1.0, 10.0)
    assert denominator_interval(cells) == (1.0, 4.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interiors(ndim=2, max_side=5))
def test_fast_path_reaches_the_same_verdict_as_exact_lps(interior: np.ndarray) -> None:
    cells = marked(cells_with_margins(interior))
    cells[SUPPRESSED] = cells[PRIMARY]
    fast = audit_subtable(cells, flat_shape(2), RULE)
    exact = audit_subtable(cells, flat_shape(2), RULE, exact=True)
    assert fast["protected"].tolist() == exact["protected"].tolist()
    # inner bounds never claim more than the exact interval
    assert (fast["feasible_min"] >= exact["feasible_min"] - 1e-6).all()
    assert (fast["feasible_max"] <= exact["feasible_max"] + 1e-6).all()


def test_sub_tables_are_solved_side_by_side(spark: SparkSession) -> None:
    # a plain groupBy of so few rows is coalesced into one partition: one task, one core
    cells = spark.createDataFrame(
        [(key, i) for key in ("area A", "area B") for i in range(50)], f"{SUBTABLE} string, i int"
    )

    def task_of(pdf: pd.DataFrame) -> pd.DataFrame:
        task = TaskContext.get()
        assert task is not None
        return pd.DataFrame({SUBTABLE: [pdf[SUBTABLE].iloc[0]], "task": [task.partitionId()]})

    tasks = cells.transform(per_subtable(task_of, f"{SUBTABLE} string, task int")).collect()
    assert sorted(row[SUBTABLE] for row in tasks) == ["area A", "area B"]  # one group each
    assert len({row["task"] for row in tasks}) == 2


def test_spark_audit_names_the_recoverable_cell(spark: SparkSession) -> None:
    cells = marked(cells_with_margins(np.array([[3, 9], [9, 40]])))
    cells[SUPPRESSED] = cells[PRIMARY]  # no complementary suppression
    frame = spark.createDataFrame(
        cells.drop(columns=["inherited", "inherited_suppressed", "subtable"])
    )
    result = frame.transform(audit(flat_shape(2), RULE))
    with pytest.raises(DisclosureRisk) as err:
        require_protected(result, flat_shape(2), "demo")
    assert "table demo is not publishable: d0=c0, d1=c0, measure=count" in str(err.value)

    cells[SUPPRESSED] = cells[PRIMARY] | cells["d0"].isin(["c1"]) & cells["d1"].isin(["c0", "c1"])
    cells.loc[(cells["d0"] == "c0") & (cells["d1"] == "c1"), SUPPRESSED] = True
    protected = spark.createDataFrame(
        cells.drop(columns=["inherited", "inherited_suppressed", "subtable"])
    )
    require_protected(protected.transform(audit(flat_shape(2), RULE)), flat_shape(2), "demo")
