"""Audit of a protected table: can any suppressed cell be recovered from what is published?

The attacker model: everyone knows the rules, so a published count p is an interval (the
true counts that round to p and were not small: [max(p-2, 8), p+2] for nearest-5), a
suppressed cell is an integer >= 1 (zero cells are never suppressed), and the table is
additive (a total equals the sum of its parts; for distinct-person tables where a person
can be in several cells, a total lies between the largest part and the sum of the parts).
In a rate table each numerator is at most its denominator. For each sensitive suppressed
cell, two linear programmes (min and max of the cell under all of that) give its
feasibility interval; the cell is protected when the interval is at least
`ProtectionRule.required` wide. The default, 7, means an attacker can never confine a
small count to fewer than 8 values, so cannot even tell it is small.

The audit (`audit`) attacks the whole table at once, every level and both measures in one
model: its sensitive cells are the primary ones (true count 1-7) and the forced ones
(hidden because a sub-table below needed it). The protection (`suppression.protect`) also
attacks each sub-table on its own; there, in a sub-table below the top level, the
inherited cells suppressed above are sensitive too: the HiTaS modular method treats those
as primary in the lower table, so that cells protecting a higher-level primary cannot be
pinned down from below. Complementary cells elsewhere need no interval: their exact value
would have been publishable (rounded) anyway.

Speed: one LP per cell per side would take minutes on 10^5-cell tables, so feasible points
are collected first: maximise then minimise the sum of all unresolved sensitive cells (each
capped at its value plus the required width). Every LP solution is a feasible table, so a
cell whose values across these points already span the required width is proven protected
without its own LPs (its reported interval is then an inner bound, `exact` false). Only
the remaining cells get their own pair of LPs, and those intervals are exact. Each LP is
solved with sparse constraints, one HiGHS model per (sub-)table, warm-started from solve
to solve (see `Solver`); sub-tables are protected in parallel across Spark executors,
and a whole table is one task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import highspy
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.aggregates import COUNT, DENOMINATOR, MEASURE, TOTAL, VALUE, TableShape
from caredata_spark.config import ConfigError
from caredata_spark.errors import CaredataError

SUPPRESSED = "suppressed"
PRIMARY = "primary"  # true count in 1..max_small: the cells suppression exists for
FORCED = "forced"  # suppressed and protected because a sub-table below needed it hidden
LOWER = "lower"  # bounds an attacker knows for a cell if it is published
UPPER = "upper"
SUBTABLE = "subtable"
INHERITED = "inherited"
TOLERANCE = 1e-6
DUAL_ABOVE = 1000  # cells in an objective above which `Solver` uses dual simplex


class DisclosureRisk(CaredataError):
    """A table failed its audit: a suppressed cell can be narrowed down. Not publishable."""


class AuditError(CaredataError, RuntimeError):
    """The audit could not run: the published values contradict the table's structure."""


@dataclass(frozen=True)
class ProtectionRule:
    """How wide a sensitive cell's feasibility interval must be.

    required width = max(min_width, ceil(percent% of the true value)); `percent` matters
    only for large inherited cells, where a fixed width is a small share of the count.
    """

    min_width: int = 7
    percent: float = 0.0

    def __post_init__(self) -> None:
        if self.min_width < 1:
            raise ConfigError(f"min_width: must be at least 1, got {self.min_width}")

    def required(self, values: np.ndarray, cap: np.ndarray | None = None) -> np.ndarray:
        """The width each cell needs; at most `cap` where given (see `disclosure_history`:
        a width earlier publications already took away cannot be asked of a new one)."""
        width = np.maximum(float(self.min_width), np.ceil(values * self.percent / 100.0))
        return width if cap is None else np.minimum(width, cap)


def no_pairs() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Structure:
    """Relations of a table's cells: relation r says cell parent[r] = sum of children, and
    pair k says cell below[k] <= cell above[k] (a rate's numerator and its denominator:
    the numerator counts some of the denominator's people or records, so an attacker
    knows it is not larger)."""

    parent: np.ndarray
    children: sp.csr_matrix  # relations x cells, 1 where the cell is a child
    additive: bool
    below: np.ndarray = field(default_factory=no_pairs)
    above: np.ndarray = field(default_factory=no_pairs)

    @property
    def n_cells(self) -> int:
        return int(self.children.shape[1])

    @property
    def totals(self) -> sp.csr_matrix:
        """relations x cells, 1 where the cell is the relation's total."""
        m = len(self.parent)
        return sp.csr_matrix((np.ones(m), (np.arange(m), self.parent)), shape=self.children.shape)

    @property
    def members(self) -> sp.csr_matrix:
        """relations x cells, 1 for every cell in the relation, its total included."""
        return (self.children + self.totals).tocsr()

    def rows(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """The relations, then the pairs, as LP rows: lower <= matrix @ cells <= upper."""
        matrix, lower, upper = self._relation_rows()
        k = len(self.below)
        if k == 0:
            return matrix, lower, upper
        below_minus_above = sp.csr_matrix(
            (
                np.concatenate([np.ones(k), -np.ones(k)]),
                (np.tile(np.arange(k), 2), np.concatenate([self.below, self.above])),
            ),
            shape=(k, self.n_cells),
        )
        return (
            sp.vstack([matrix, below_minus_above]).tocsr(),
            np.concatenate([lower, np.full(k, -highspy.kHighsInf)]),
            np.concatenate([upper, np.zeros(k)]),
        )

    def _relation_rows(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        m = len(self.parent)
        if self.additive:
            return (self.children - self.totals).tocsr(), np.zeros(m), np.zeros(m)
        # total <= sum of parts, and every part <= total
        coo = self.children.tocoo()
        part_le_total = sp.csr_matrix(
            (
                np.concatenate([np.ones(coo.nnz), -np.ones(coo.nnz)]),
                (np.tile(np.arange(coo.nnz), 2), np.concatenate([coo.col, self.parent[coo.row]])),
            ),
            shape=(coo.nnz, self.n_cells),
        )
        matrix = sp.vstack([self.totals - self.children, part_le_total]).tocsr()
        return matrix, np.full(matrix.shape[0], -highspy.kHighsInf), np.zeros(matrix.shape[0])


def cell_keys(cells: pd.DataFrame, shape: TableShape) -> list[str]:
    """The columns naming a cell: its categories, and its measure when the frame has one
    (a rate table has a numerator and a denominator cell per combination of categories)."""
    return [*shape.dimensions, *([MEASURE] if MEASURE in cells.columns else [])]


def rate_pairs(
    cells: pd.DataFrame, keys: list[str], index: pd.MultiIndex
) -> tuple[np.ndarray, np.ndarray]:
    """(numerator cells, their denominator cells), rows of `cells` whose keys are `index`."""
    if MEASURE not in keys:
        return no_pairs(), no_pairs()
    numerators = np.flatnonzero(cells[MEASURE].to_numpy() == COUNT)
    wanted = cells.iloc[numerators][keys].astype(str).assign(**{MEASURE: DENOMINATOR})
    found = index.get_indexer(pd.MultiIndex.from_frame(wanted))
    keep = found >= 0
    return numerators[keep].astype(np.int64), found[keep].astype(np.int64)


def structure(cells: pd.DataFrame, shape: TableShape) -> Structure:
    """Relations among the cells present: along each chain, a cell's parent is the cell
    of the same measure with its finest non-total column of that chain set to TOTAL.
    Parents outside this sub-table are simply absent, which is what cuts a table into
    sub-tables."""
    keys = cell_keys(cells, shape)
    index = pd.MultiIndex.from_frame(cells[keys].astype(str))
    below, above = rate_pairs(cells, keys, index)
    parents, children, relation_ids = [], [], []
    for c, chain in enumerate(shape.hierarchies):
        depth = (cells[list(chain)] != TOTAL).sum(axis=1).to_numpy()
        for d in range(1, len(chain) + 1):
            rows = np.flatnonzero(depth == d)
            if rows.size == 0:
                continue
            parent_keys = cells.iloc[rows][keys].astype(str).copy()
            parent_keys[chain[d - 1]] = TOTAL
            found = index.get_indexer(pd.MultiIndex.from_frame(parent_keys))
            keep = found >= 0
            parents.append(found[keep])
            children.append(rows[keep])
            relation_ids.append(found[keep].astype(np.int64) * len(shape.hierarchies) + c)
    n = len(cells)
    if not parents:
        return Structure(no_pairs(), sp.csr_matrix((0, n)), shape.additive, below, above)
    relation_of, relation_keys = pd.factorize(np.concatenate(relation_ids))
    parent = (relation_keys // len(shape.hierarchies)).astype(np.int64)
    child_cells = np.concatenate(children)
    matrix = sp.csr_matrix(
        (np.ones(len(child_cells)), (relation_of, child_cells)), shape=(len(relation_keys), n)
    )
    return Structure(parent, matrix, shape.additive, below, above)


class Solver:
    """One HiGHS model of a sub-table's relations, solved many times.

    Between solves only the objective and the cells' bounds change, so HiGHS starts each
    solve from the last optimal basis, usually a few pivots away, instead of rebuilding
    and checking the model from scratch as a `scipy.optimize.linprog` call does.
    """

    def __init__(self, relations: Structure) -> None:
        # highspy.Highs adds Python callbacks, and enabling them prints HiGHS's banner
        # before any option can silence it; the bare model has neither.
        self._highs = highspy._Highs()
        self._highs.setOptionValue("output_flag", False)
        self._strategy = -1
        n = relations.n_cells
        self._cells = np.arange(n, dtype=np.int32)
        self._highs.addVars(n, np.zeros(n), np.full(n, highspy.kHighsInf))
        matrix, lower, upper = relations.rows()
        if matrix.shape[0]:
            self._highs.addRows(
                matrix.shape[0],
                lower,
                upper,
                matrix.nnz,
                matrix.indptr[:-1].astype(np.int32),
                matrix.indices.astype(np.int32),
                matrix.data.astype(float),
            )

    def solve(self, objective: np.ndarray, bounds: np.ndarray) -> np.ndarray | None:
        """An optimal feasible table minimising `objective`, or None when it is unbounded."""
        n = len(self._cells)
        self._use(self._strategy_for(objective))
        self._highs.changeColsCost(n, self._cells, objective.astype(float))
        self._highs.changeColsBounds(n, self._cells, bounds[:, 0], bounds[:, 1])
        self._highs.run()
        status = self._highs.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            # a warm start can end in a wrong verdict (ERGO-Code/HiGHS#1561; here "infeasible"
            # on a whole table the true counts satisfy), and a wrong "unbounded" would pass a
            # pinned cell: any verdict but optimal is taken only from a fresh start
            self._highs.clearSolver()
            self._highs.run()
            status = self._highs.getModelStatus()
        if status == highspy.HighsModelStatus.kUnbounded:
            return None
        if status != highspy.HighsModelStatus.kOptimal:
            raise AuditError(f"audit LP failed ({self._highs.modelStatusToString(status)})")
        return np.asarray(self._highs.getSolution().col_value)

    @staticmethod
    def _strategy_for(objective: np.ndarray) -> int:
        """Primal simplex for one cell's min or max: the objective and at most that cell's
        bound change, so the last basis stays primal feasible, or nearly, and primal simplex
        goes on from it (about 18 iterations a solve on the 1M diabetes table's areas,
        against 245, and 3.3x the time, with dual simplex). Dual simplex for a sum of more
        than DUAL_ABOVE cells, as a whole table's first solves are, far from the last
        basis or from none: on the 15,028-cell table of docs/performance.md the first took
        0.3 s with it, 5.3 s with primal simplex. A threshold of 1 or 100 cells instead
        was no faster, there or on the 1M diabetes table (one run each, loaded machine)."""
        constants = highspy.simplex_constants.SimplexStrategy
        many = np.count_nonzero(objective) > DUAL_ABOVE
        return int(constants.kSimplexStrategyDual if many else constants.kSimplexStrategyPrimal)

    def _use(self, strategy: int) -> None:
        if strategy != self._strategy:
            self._highs.setOptionValue("simplex_strategy", strategy)
            self._strategy = strategy


@dataclass(frozen=True)
class Intervals:
    """Feasibility intervals of some cells; inner bounds where `exact` is false."""

    lower: np.ndarray
    upper: np.ndarray
    exact: np.ndarray


def feasibility(
    solver: Solver,
    value: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    cells: np.ndarray,
    required: np.ndarray,
    exact: bool = False,
) -> Intervals:
    """Feasibility intervals of `cells` (indices) given per-cell bounds an attacker knows,
    on the sub-table `solver` models (reused across calls, it starts from its last basis).

    With exact=False, an interval is only widened until it reaches `required` (see the
    module docstring); the intervals of failing cells are always exact. Every LP solution
    is a feasible table, so each one widens the seen range of every cell, not only the
    cell it was solved for.
    """
    bounds = np.column_stack([lower, upper]).astype(float)
    seen_lo = value.astype(float)[cells]
    seen_hi = seen_lo.copy()
    is_exact = np.zeros(len(cells), dtype=bool)
    cap = value[cells] + required

    def record(x: np.ndarray) -> None:
        np.minimum(seen_lo, x[cells], out=seen_lo)
        np.maximum(seen_hi, x[cells], out=seen_hi)

    def short() -> np.ndarray:
        return seen_hi - seen_lo < required - TOLERANCE

    if not exact:
        capped = bounds.copy()
        capped[cells, 1] = np.minimum(capped[cells, 1], cap)
        open_ = short()
        while open_.any():
            # maximise the open cells, then minimise those not yet seen at their lower
            # bound (after the first round, few): on a whole table each solve is costly
            for sign, moved in ((-1.0, open_), (1.0, open_ & (seen_lo > bounds[cells, 0]))):
                if not moved.any():
                    continue
                objective = np.zeros(len(value))
                objective[cells[moved]] = sign
                x = solver.solve(objective, capped)
                assert x is not None  # every objective cell is capped
                record(x)
            still = open_ & short()
            if still.sum() == open_.sum():
                break
            open_ = still

    for i in range(len(cells)) if exact else np.flatnonzero(short()):
        if not (exact or short()[i]):
            continue  # proven by the solution of an earlier cell
        objective = np.zeros(len(value))
        objective[cells[i]] = 1.0
        target = bounds.copy()
        if not exact:  # reaching the cap proves enough; below it, the max is exact
            target[cells[i], 1] = min(target[cells[i], 1], cap[i])
        top = solver.solve(-objective, target)
        if top is None:
            seen_hi[i] = np.inf
        else:
            record(top)
        if seen_lo[i] <= bounds[cells[i], 0]:
            is_exact[i] = top is None or seen_hi[i] < cap[i] or exact  # the min is its bound
        elif exact or short()[i]:
            bottom = solver.solve(objective, bounds)
            assert bottom is not None  # lower bounds are finite
            record(bottom)
            is_exact[i] = True
    return Intervals(seen_lo, seen_hi, is_exact)


def hidden_bounds(
    suppressed: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell bounds: [lower, upper] where published, [1, inf) where suppressed."""
    return np.where(suppressed, 1.0, lower), np.where(suppressed, np.inf, upper)


def to_protect(cells: pd.DataFrame, suppressed: np.ndarray) -> np.ndarray:
    """The hidden cells that need a wide interval: small counts and forced totals."""
    return suppressed & (cells[PRIMARY].to_numpy(bool) | cells[FORCED].to_numpy(bool))


def attacker_bounds(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell bounds: the published interval, or [1, inf) where suppressed."""
    return hidden_bounds(
        cells[SUPPRESSED].to_numpy(bool), cells[LOWER].to_numpy(float), cells[UPPER].to_numpy(float)
    )


def audit_subtable(
    cells: pd.DataFrame, shape: TableShape, rule: ProtectionRule, exact: bool = False
) -> pd.DataFrame:
    """Intervals of the sensitive suppressed cells of one sub-table (rows of `cells`), or of
    the whole table when given all its cells, none of them `INHERITED`."""
    sensitive = cells[SUPPRESSED].to_numpy(bool) & (
        cells[PRIMARY].to_numpy(bool)
        | cells[FORCED].to_numpy(bool)
        | cells[INHERITED].to_numpy(bool)
    )
    return attack(cells, structure(cells, shape), sensitive, shape, rule, exact)


def attack(
    cells: pd.DataFrame,
    relations: Structure,
    sensitive: np.ndarray,
    shape: TableShape,
    rule: ProtectionRule,
    exact: bool = False,
    cap: np.ndarray | None = None,
) -> pd.DataFrame:
    """Intervals of the `sensitive` cells given `relations` among `cells` (rows: their
    columns VALUE, SUPPRESSED, LOWER, UPPER, the dimensions, MEASURE and SUBTABLE); `cap`
    (per cell) as in `ProtectionRule.required`."""
    targets = np.flatnonzero(sensitive)
    value = cells[VALUE].to_numpy(float)
    required = rule.required(value[targets], None if cap is None else cap[targets])
    lower, upper = attacker_bounds(cells)
    found = feasibility(Solver(relations), value, lower, upper, targets, required, exact)
    out = cells.iloc[targets][[*shape.dimensions, MEASURE, SUBTABLE]].copy()
    out["feasible_min"] = found.lower
    out["feasible_max"] = found.upper
    out["required_width"] = required
    out["exact"] = found.exact
    out["protected"] = found.upper - found.lower >= required - TOLERANCE
    return out.reset_index(drop=True)


# --- sub-tables in Spark ---------------------------------------------------------------


def subtable_levels(shape: TableShape) -> int:
    """Levels of the split chain processed top-down: area > district gives 2."""
    return max(len(shape.split_chain), 1)


def split_depth(shape: TableShape) -> Column:
    """How many columns of the split chain a cell is broken down by (0 = national)."""
    return sum((F.when(F.col(c) != TOTAL, 1).otherwise(0) for c in shape.split_chain), F.lit(0))


def subtables(shape: TableShape, level: int) -> Callable[[DataFrame], DataFrame]:
    """Cells of the level-`level` sub-tables, each keyed by `SUBTABLE`.

    A level-j sub-table holds one category at depth j (the whole table's total at j=0)
    and its children at depth j+1, crossed with every other dimension; its depth-j cells
    are `INHERITED`: their status was decided by the level above. Without a split the
    whole table is one sub-table. A rate table's numerator and denominator cells share
    their sub-tables: each numerator is known to be at most its denominator, which can
    pin a hidden count only a model holding both measures sees.
    """
    chain = shape.split_chain
    depth = split_depth(shape)
    key = F.to_json(F.array(F.lit(str(level)), *(F.col(c) for c in chain[:level])))

    # without a split, depth is the literal 0: compared, Spark warns of a trivially true predicate
    inherited = (depth == level) & F.lit(level > 0) if chain else F.lit(False)

    def transform(cells: DataFrame) -> DataFrame:
        members = cells.where(depth.isin(level, level + 1)) if chain else cells
        return members.withColumn(SUBTABLE, key).withColumn(INHERITED, inherited)

    return transform


def per_subtable(
    solve: Callable[[pd.DataFrame], pd.DataFrame], schema: str
) -> Callable[[DataFrame], DataFrame]:
    """`solve` run on each sub-table's cells (keyed by `SUBTABLE`), sub-tables side by side.

    A plain groupBy's shuffle holds a few thousand cells, so adaptive execution coalesces
    it into one partition, and one task would solve every sub-table in turn on one core,
    however large the cluster. Range partitioning by sub-table into as many partitions as
    the session shuffles into gives each sub-table its own task (when there are fewer
    sub-tables than that; sampling permitting), and adaptive execution leaves a partition
    count the query asked for as it is. The grouping then needs no second shuffle.
    """

    def transform(members: DataFrame) -> DataFrame:
        partitions = int(members.sparkSession.conf.get("spark.sql.shuffle.partitions", "200"))
        return (
            members.repartitionByRange(partitions, SUBTABLE)
            .groupBy(SUBTABLE)
            .applyInPandas(solve, schema)
        )

    return transform


def audit_schema(shape: TableShape) -> str:
    dims = ", ".join(f"`{d}` string" for d in shape.dimensions)
    return (
        f"{dims}, {MEASURE} string, {SUBTABLE} string, feasible_min double, "
        "feasible_max double, required_width double, exact boolean, protected boolean"
    )


WHOLE_TABLE = json.dumps(["table"])


def whole_table(cells: DataFrame) -> DataFrame:
    """Every cell of a table as one sub-table: all an attacker sees at once."""
    return cells.withColumn(SUBTABLE, F.lit(WHOLE_TABLE)).withColumn(INHERITED, F.lit(False))


def audit(
    shape: TableShape, rule: ProtectionRule, exact: bool = False
) -> Callable[[DataFrame], DataFrame]:
    """Protected cell frame -> one row per sensitive (primary or forced) suppressed cell.

    Input columns: the dimensions, MEASURE, VALUE (true count), SUPPRESSED, PRIMARY,
    FORCED and LOWER/UPPER (the interval a published count stands for, from
    `suppression.mark_primary`).

    The attack is on the whole table at once, in one LP model (both measures of a rate
    table): sub-tables audited one by one each miss what the others publish. An area's
    sub-table takes its published area total as [p-2, p+2], yet the national total and the
    other areas' totals can narrow it, and with it the area's hidden cells. The model has
    one column per cell and one row per relation and rate pair, so it grows with the
    table, not the population, and is solved in one applyInPandas task: the diabetes
    table has 816 cells at 100k people and 3,169 (1,676 rows) at 1M, attacked in about
    2 s; a 37,476-cell table took 23 s (docs/performance.md, "The whole-table attack").
    """
    columns = [*shape.dimensions, MEASURE, VALUE, SUPPRESSED, PRIMARY, FORCED, LOWER, UPPER]

    def audit_group(pdf: pd.DataFrame) -> pd.DataFrame:
        return audit_subtable(pdf.reset_index(drop=True), shape, rule, exact)

    def transform(cells: DataFrame) -> DataFrame:
        return (
            cells.select(*columns)
            .transform(whole_table)
            .transform(per_subtable(audit_group, audit_schema(shape)))
        )

    return transform


def describe_cell(row: dict[str, object], shape: TableShape) -> str:
    """A cell named by its categories only (never its count)."""
    return ", ".join(f"{d}={row[d]}" for d in (*shape.dimensions, MEASURE))


def require_protected(result: DataFrame, shape: TableShape, table: str) -> None:
    """Raise DisclosureRisk naming the first unprotected cells; silent when all pass."""
    failing = result.where(~F.col("protected"))
    first = [row.asDict() for row in failing.limit(3).collect()]
    if not first:
        return
    more = failing.count() - len(first)
    named = "; ".join(
        f"{describe_cell(row, shape)} (interval width "
        f"{row['feasible_max'] - row['feasible_min']:g}, needs {row['required_width']:g})"
        for row in first
    )
    extra = f" and {more} more" if more > 0 else ""
    raise DisclosureRisk(f"table {table} is not publishable: {named}{extra}")
