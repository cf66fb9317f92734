"""Small-number suppression and rounding of a table of cells, then complementary suppression.

Primary (NHS Digital HES convention): a count of 1..7 is published as `*`; every other
count, totals included, is rounded from its own unrounded value (nearest 5, or the
midpoint-6 alternative ceil(x/6)*6-3), so totals are not sums of rounded cells. A rate
is published only when both its counts are, and is computed from the published (rounded)
counts so it reveals nothing the counts do not.

Secondary (complementary) suppression, per sub-table (`disclosure_audit.subtables`):
1. Close every open relation: a total and its parts with exactly one suppressed cell
   would give that cell away by subtraction, so one more cell of the relation is
   suppressed. The pick prefers a cell that closes several open relations at once, then
   the smallest count (least information lost; totals are large, so parts are preferred).
   Repeated until no relation has exactly one suppressed cell (sdcTable's SIMPLEHEURISTIC
   idea, which on a 2-D table builds the classic rectangles).
2. Audit the sensitive cells with the LP attack of `disclosure_audit` (rounded published
   values count as intervals). For each cell still too narrow, suppress one more cell of a
   relation it is in (the smallest count at least the required width, which gives the
   cell room to move), close open relations again and re-audit only the failing cells:
   suppressing more only widens intervals, so passed cells stay passed.
3. Stop when all pass, or when nothing is left to suppress (the table then fails the
   audit and is not published).
Sub-tables are processed top-down (HiTaS-style modular method): the top level first, then
every category of the split dimension in parallel with the statuses of its shared total
cells fixed from above; when a sub-table can only be protected by hiding one of those
totals, the total is forced at the level above and the levels run again (`protect`).
Sub-tables protected one by one each miss what the others publish, so last the whole
table is attacked at once and steps 2-3 run on it (`protect_whole_table`). A rate table's
numerator and denominator are protected together (each numerator is at most its
denominator, which an attacker knows too). Work on one sub-table runs in a pandas function
via applyInPandas: numeric work per sub-table, not a per-row UDF. Zero cells are never
suppressed (they are not in the table).

Pipeline (`disclosure.protect_table`): table_cells(definition) -> protect(shape, policy)
[-> disclosure_history.protect_against(earlier versions)] -> audit(shape, rule) and
require_protected -> publication(shape, rate_per).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.aggregates import (
    COUNT,
    DENOMINATOR,
    GROUPING_ID,
    MEASURE,
    TOTAL,
    VALUE,
    TableShape,
)
from caredata_spark.config import ConfigError
from caredata_spark.disclosure_audit import (
    FORCED,
    INHERITED,
    LOWER,
    PRIMARY,
    SUPPRESSED,
    UPPER,
    ProtectionRule,
    Solver,
    Structure,
    feasibility,
    hidden_bounds,
    per_subtable,
    split_depth,
    structure,
    subtable_levels,
    subtables,
    to_protect,
    whole_table,
)

SUPPRESSED_MARK = "*"  # HES convention: one mark for every suppressed cell, whatever the reason
ROUNDED = "rounded"
INHERITED_SUPPRESSED = "inherited_suppressed"
UNLOCKED = "unlocked"  # an inherited total a sub-table had to suppress
MAX_BACKTRACKS = 8  # the 1M diabetes table needs 5 rounds; a table still failing is refused

# rounding -> (how far below and above a published value the true count can be)
ROUNDING_SPREAD = {"nearest5": (2, 2), "midpoint6": (2, 3)}


@dataclass(frozen=True)
class DisclosurePolicy:
    """The disclosure rules every published table follows (`disclosure:` in publication.yaml)."""

    rounding: str = "nearest5"
    max_small: int = 7
    secondary: bool = True
    protection: ProtectionRule = field(default_factory=ProtectionRule)

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDING_SPREAD:
            raise ConfigError(
                f"rounding: expected one of {', '.join(ROUNDING_SPREAD)}, got {self.rounding!r}"
            )
        if self.max_small < 1:
            raise ConfigError(f"max_small: must be at least 1, got {self.max_small}")


def rounded(value: Column, rounding: str) -> Column:
    """A count as published: nearest 5 (halves up), or midpoint 6; zero stays zero."""
    if rounding == "midpoint6":
        return F.when(value == 0, F.lit(0)).otherwise(F.ceil(value / 6) * 6 - 3).cast("long")
    return (F.floor((value + 2) / 5) * 5).cast("long")


def mark_primary(policy: DisclosurePolicy) -> Callable[[DataFrame], DataFrame]:
    """Flag small counts (1..max_small) and attach each cell's rounded value and the
    interval an attacker would infer from it if published (small counts never are, so the
    interval starts above max_small)."""
    below, above = ROUNDING_SPREAD[policy.rounding]

    def transform(cells: DataFrame) -> DataFrame:
        value = F.col(VALUE)
        published = F.col(ROUNDED)
        return (
            cells.withColumn(PRIMARY, value.between(1, policy.max_small))
            .withColumn(ROUNDED, rounded(value, policy.rounding))
            .withColumn(
                LOWER,
                F.when(published == 0, F.lit(0))
                .otherwise(F.greatest(published - below, F.lit(policy.max_small + 1)))
                .cast("double"),
            )
            .withColumn(
                UPPER, F.when(published == 0, F.lit(0)).otherwise(published + above).cast("double")
            )
        )

    return transform


# --- secondary suppression on one sub-table (numpy) ------------------------------------


def close_open_relations(
    members: sp.csr_matrix, suppressed: np.ndarray, candidate: np.ndarray, value: np.ndarray
) -> np.ndarray:
    """Suppress cells until no relation has exactly one suppressed cell (where possible)."""
    suppressed = suppressed.copy()
    while True:
        open_rows = members[(members @ suppressed.astype(float)) == 1]
        entries = open_rows.tocoo()
        usable = candidate[entries.col] & ~suppressed[entries.col]
        if not usable.any():
            return suppressed
        closes = np.asarray(open_rows.sum(axis=0)).ravel()
        cells = entries.col[usable]
        options = pd.DataFrame(
            {
                "relation": entries.row[usable],
                "cell": cells,
                "closes": -closes[cells],
                "value": value[cells],
            }
        )
        picks = options.sort_values(["relation", "closes", "value", "cell"]).drop_duplicates(
            "relation"
        )
        suppressed[picks["cell"].to_numpy()] = True


def by_usefulness(cells: np.ndarray, value: np.ndarray, need: float) -> np.ndarray:
    """`cells` in the order complements are tried: the counts that can absorb `need`,
    smallest first (least information lost), then the others, largest first."""
    values = value[cells]
    enough = values >= need + 1
    able = cells[enough][np.argsort(values[enough], kind="stable")]
    rest = cells[~enough][np.argsort(-values[~enough], kind="stable")]
    return np.concatenate([able, rest]).astype(np.int64)


def _cheapest_useful(cells: np.ndarray, value: np.ndarray, need: float) -> int | None:
    """The smallest count that can absorb `need`, else the largest available count."""
    ordered = by_usefulness(cells, value, need)
    return int(ordered[0]) if ordered.size else None


def complements(
    members: sp.csr_matrix,
    failing: np.ndarray,
    need: np.ndarray,
    available: np.ndarray,
    value: np.ndarray,
    last_resort: np.ndarray,
) -> np.ndarray:
    """One more cell to suppress per failing cell: from a relation it is in, else from a
    relation sharing a cell with those, else (`last_resort`) an inherited total of its
    relations, which sends the choice back to the level above (see `protect`)."""
    by_cell = members.tocsc()
    picks = set()
    for cell, width in zip(failing, need):
        near, wider = neighbourhood(members, by_cell, cell)
        for pool in (near[available[near]], wider[available[wider]], near[last_resort[near]]):
            pick = _cheapest_useful(pool, value, width)
            if pick is not None:
                picks.add(pick)
                break
    return np.array(sorted(picks), dtype=np.int64)


def neighbourhood(
    members: sp.csr_matrix, by_cell: sp.csc_matrix, cell: int
) -> tuple[np.ndarray, np.ndarray]:
    """The cells of the relations `cell` is in, and of the relations sharing a cell with those."""
    near = np.unique(members[by_cell[:, cell].indices].indices)
    wider = np.unique(members[np.unique(by_cell[:, near].indices)].indices)
    return near, wider


# (failing cell, the width it needs, the cells suppressed now) -> one more to suppress, or None
Chooser = Callable[[int, float, np.ndarray], int | None]


def nearest_complement(members: sp.csr_matrix, candidate: np.ndarray, value: np.ndarray) -> Chooser:
    """`complements` as a `Chooser`: the cheapest useful cell beside the failing one."""

    def choose(cell: int, need: float, suppressed: np.ndarray) -> int | None:
        picks = complements(
            members, np.array([cell]), np.array([need]), candidate & ~suppressed, value,
            np.zeros_like(suppressed),
        )
        return int(picks[0]) if picks.size else None

    return choose


def too_narrow(
    solver: Solver,
    value: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    cells: np.ndarray,
    rule: ProtectionRule,
    cap: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Those of `cells` (indices) an attacker knowing `bounds` confines to an interval
    narrower than `rule` asks (at most `cap`, per cell, where given), and the width each
    needs."""
    need = rule.required(value[cells], None if cap is None else cap[cells])
    found = feasibility(solver, value, *bounds, cells, need)
    short = found.upper - found.lower < need - 1e-6
    return cells[short], need[short]


def suppress_until_protected(
    relations: Structure,
    value: np.ndarray,
    published: tuple[np.ndarray, np.ndarray],
    suppressed: np.ndarray,
    sensitive: np.ndarray,
    candidate: np.ndarray,
    unlockable: np.ndarray,
    rule: ProtectionRule,
) -> np.ndarray:
    """Steps 1-3 of the module docstring on arrays: which cells end up suppressed.

    `published` is what an attacker would know of each cell were it shown; `suppressed`
    the cells hidden to begin with, of which the `sensitive` ones must be protected
    (`rule`). Further complements come from `candidate`, and from `unlockable` (cells
    then protected too) only as a last resort. One HiGHS model serves every round: between
    rounds only the bounds change.
    """
    members = relations.members
    solver = Solver(relations)
    pending = np.flatnonzero(sensitive)
    while True:
        suppressed = close_open_relations(members, suppressed, candidate, value)
        bounds = hidden_bounds(suppressed, *published)
        pending, need = too_narrow(solver, value, bounds, pending, rule)
        extra = complements(
            members, pending, need, candidate & ~suppressed, value, unlockable & ~suppressed
        )
        if extra.size == 0:
            return suppressed
        suppressed[extra] = True
        pending = np.union1d(pending, extra[unlockable[extra]])  # unlocked: protect it too


def suppress_in_turn(
    relations: Structure,
    value: np.ndarray,
    published: tuple[np.ndarray, np.ndarray],
    suppressed: np.ndarray,
    sensitive: np.ndarray,
    candidate: np.ndarray,
    rule: ProtectionRule,
    rank: np.ndarray,
    cap: np.ndarray | None = None,
    choose: Chooser | None = None,
) -> np.ndarray:
    """Like `suppress_until_protected`, but the failing cells are mended one at a time, by
    `rank` (then index): the first gets one complement (open relations then closed) until
    it passes, then the next. On a whole table many failing cells share one cause, which
    one complement often mends; a complement for each at once hid far more (see
    `protect_whole_table`). Each step checks one cell, a few LPs, so the cost follows the
    failing cells, not rounds over the whole table; suppressing more only widens
    intervals, so a mended cell stays mended. `cap` as in `too_narrow`; `choose` picks each
    complement (default `nearest_complement`).
    """
    members = relations.members
    solver = Solver(relations)
    choose = choose or nearest_complement(members, candidate, value)
    failing, _ = too_narrow(
        solver, value, hidden_bounds(suppressed, *published), np.flatnonzero(sensitive), rule, cap
    )
    for cell in failing[np.argsort(rank[failing], kind="stable")]:
        while True:
            bounds = hidden_bounds(suppressed, *published)
            short, need = too_narrow(solver, value, bounds, np.array([cell]), rule, cap)
            pick = choose(cell, float(need[0]), suppressed) if short.size else None
            if pick is None:
                break  # mended, or nothing left to hide: the audit then refuses the table
            suppressed = suppressed.copy()
            suppressed[pick] = True
            suppressed = close_open_relations(members, suppressed, candidate, value)
    return suppressed


def protect_subtable(
    cells: pd.DataFrame, shape: TableShape, policy: DisclosurePolicy
) -> pd.DataFrame:
    """Suppression status of one sub-table's cells (see the module docstring).

    Needs the columns of `mark_primary`, FORCED (suppress and protect, as asked by a
    sub-table below), INHERITED and INHERITED_SUPPRESSED. Returns the cells decided here
    with SUPPRESSED, plus any inherited published cell this sub-table could only be
    protected by suppressing, flagged UNLOCKED.

    Cells are worked on in the order of their keys, and returned in the order given: ties
    between complements are broken by position, and a shuffle delivers rows in any order,
    so a re-run could otherwise hide other cells, and two patterns of one table can be
    subtracted from each other.
    """
    given_order = cells.index
    cells = cells.sort_values([*shape.dimensions, MEASURE])
    value = cells[VALUE].to_numpy(float)
    inherited = cells[INHERITED].to_numpy(bool)
    given = (
        cells[PRIMARY].to_numpy(bool)
        | cells[FORCED].to_numpy(bool)
        | (inherited & cells[INHERITED_SUPPRESSED].eq(True).to_numpy())
    )
    suppressed = suppress_until_protected(
        structure(cells, shape),
        value,
        (cells[LOWER].to_numpy(float), cells[UPPER].to_numpy(float)),
        given,
        given,
        ~given & ~inherited & (value > 0),
        ~given & inherited & (value > 0),
        policy.protection,
    )
    unlocked = inherited & suppressed & ~given
    decided = cells.assign(**{SUPPRESSED: suppressed, UNLOCKED: unlocked})[~inherited | unlocked]
    in_given_order = given_order[given_order.isin(decided.index)]
    return decided.loc[in_given_order, [*protected_columns(shape), UNLOCKED]]


def protect_whole_table(
    cells: pd.DataFrame, shape: TableShape, policy: DisclosurePolicy
) -> pd.DataFrame:
    """The statuses of every cell of a table, with the complements its whole-table attack
    (`disclosure_audit.audit`) still asks for after the sub-tables were protected.

    Sub-tables protected one by one each miss what the others publish (an area total is
    narrowed by the national one and the other areas'), so a pattern every sub-table
    passes can still pin a hidden cell. Here the primary and forced cells are attacked on
    the whole table, and those still too narrow get further complements, one cell at a
    time, national cells first, then areas, then districts (`suppress_in_turn`): a cell
    high up is often why cells below it are narrow. A complement here only widens
    intervals, so no sub-table needs re-running. Cells are taken in the order of their
    keys (see `protect_subtable`).

    Hidden cells added, on the 1M diabetes table (3,169 cells, 1,584 hidden by the
    sub-tables, 178 of them too narrow when attacked whole) / its 100k one (816, 502, 51)
    / 100 random small split tables: 21 / 22 / 90 this way; 365 / 58 / 97 taking the cells
    in key order; 436 / 109 / 206 with a complement for every failing cell at once, round
    after round, as in a sub-table.
    """
    cells = cells.sort_values([*shape.dimensions, MEASURE])
    value = cells[VALUE].to_numpy(float)
    hidden = cells[SUPPRESSED].to_numpy(bool)
    sensitive = to_protect(cells, hidden)
    depth = (cells[list(shape.split_chain)] != TOTAL).sum(axis=1).to_numpy()
    suppressed = suppress_in_turn(
        structure(cells, shape),
        value,
        (cells[LOWER].to_numpy(float), cells[UPPER].to_numpy(float)),
        hidden,
        sensitive,
        ~hidden & (value > 0),
        policy.protection,
        depth,
    )
    return cells.assign(**{SUPPRESSED: suppressed})[protected_columns(shape)]


# --- Spark -----------------------------------------------------------------------------


def protected_columns(shape: TableShape) -> list[str]:
    return [
        *shape.dimensions,
        GROUPING_ID,
        MEASURE,
        VALUE,
        PRIMARY,
        FORCED,
        ROUNDED,
        LOWER,
        UPPER,
        SUPPRESSED,
    ]


def protected_schema(shape: TableShape) -> str:
    dims = ", ".join(f"`{d}` string" for d in shape.dimensions)
    return (
        f"{dims}, {GROUPING_ID} int, {MEASURE} string, {VALUE} long, {PRIMARY} boolean, "
        f"{FORCED} boolean, {ROUNDED} long, {LOWER} double, {UPPER} double, {SUPPRESSED} boolean"
    )


def protect(shape: TableShape, policy: DisclosurePolicy) -> Callable[[DataFrame], DataFrame]:
    """Cells (`aggregates.table_cells`) -> cells with PRIMARY, FORCED, ROUNDED, LOWER/UPPER
    and SUPPRESSED. Internal: still holds the true VALUE; publish with `publication`.

    One applyInPandas pass per level of the split chain, top-down; each level is
    checkpointed because the next one reads its statuses (and a recomputed level would
    redo all its LPs). The statuses join back on the cell keys: a shuffle join of two
    table-sized frames (cells, not records), whatever the population.

    Backtracking: when a sub-table can only be protected by suppressing one of its
    inherited totals (say a published district total of 10 over seven 1-person cells pins
    each to 1..4, however much else is hidden), that total is forced (suppressed and
    protected) at the level above and the levels are run again, at most MAX_BACKTRACKS
    times. Then, for a split table, `protect_whole_table` adds what the whole-table attack
    still asks for, in one task; a table still failing is caught by the audit and not
    published.
    """
    keys = [*shape.dimensions, MEASURE]

    def protect_group(pdf: pd.DataFrame) -> pd.DataFrame:
        return protect_subtable(pdf.reset_index(drop=True), shape, policy)

    def protect_whole(pdf: pd.DataFrame) -> pd.DataFrame:
        return protect_whole_table(pdf.reset_index(drop=True), shape, policy)

    def top_down(marked: DataFrame) -> tuple[DataFrame, DataFrame]:
        decided: DataFrame | None = None
        unlocked: DataFrame | None = None
        for level in range(subtable_levels(shape)):
            members = marked.transform(subtables(shape, level))
            if decided is None:
                members = members.withColumn(INHERITED_SUPPRESSED, F.lit(False))
            else:
                above = decided.where(split_depth(shape) == level).select(
                    *keys, F.col(SUPPRESSED).alias(INHERITED_SUPPRESSED)
                )
                members = members.join(above, on=keys, how="left")
            result = members.transform(
                per_subtable(protect_group, f"{protected_schema(shape)}, {UNLOCKED} boolean")
            ).localCheckpoint()
            own = result.where(~F.col(UNLOCKED)).drop(UNLOCKED)
            asked = result.where(F.col(UNLOCKED)).select(*keys)
            decided = own if decided is None else decided.unionByName(own)
            unlocked = asked if unlocked is None else unlocked.unionByName(asked)
        assert decided is not None and unlocked is not None
        return decided, unlocked

    def transform(cells: DataFrame) -> DataFrame:
        marked = (
            cells.transform(mark_primary(policy)).withColumn(FORCED, F.lit(False)).localCheckpoint()
        )
        if not policy.secondary:
            return marked.withColumn(SUPPRESSED, F.col(PRIMARY)).select(*protected_columns(shape))
        for _ in range(MAX_BACKTRACKS):
            decided, unlocked = top_down(marked)
            if unlocked.isEmpty():
                break
            marked = (
                marked.join(unlocked.withColumn("asked", F.lit(True)), on=keys, how="left")
                .withColumn(FORCED, F.col(FORCED) | F.coalesce(F.col("asked"), F.lit(False)))
                .drop("asked")
                .localCheckpoint()
            )
        if not shape.split_chain:  # the top level was the whole table
            return decided
        return (
            decided.transform(whole_table)
            .transform(per_subtable(protect_whole, protected_schema(shape)))
            .localCheckpoint()
        )

    return transform


def publication(shape: TableShape, rate_per: int | None = None) -> Callable[[DataFrame], DataFrame]:
    """Protected cells -> the public table: one row per cell, no true counts.

    `count` is the published text (`*` or the rounded count, the HES convention) and
    `count_value` the same as a number (null where suppressed) for charts. A rate table
    adds `denominator`/`denominator_value` and `rate`/`rate_value` (per `rate_per`), the
    rate computed from the two published counts and `*` unless both are published.
    """
    dims = list(shape.dimensions)
    measures = [COUNT] if rate_per is None else [COUNT, DENOMINATOR]

    def transform(protected: DataFrame) -> DataFrame:
        shown = F.when(~F.col(SUPPRESSED), F.col(ROUNDED))
        wide = protected.groupBy(*dims, GROUPING_ID).agg(
            *(F.max(F.when(F.col(MEASURE) == m, shown)).alias(f"{m}_value") for m in measures)
        )
        columns = [
            *(F.col(d) for d in dims),
            F.col(GROUPING_ID),
            *(
                col
                for m in measures
                for col in (as_text(F.col(f"{m}_value")).alias(m), F.col(f"{m}_value"))
            ),
        ]
        if rate_per is not None:
            rate = F.round(F.col("count_value") / F.col("denominator_value") * rate_per, 1)
            rate_value = F.when(F.col("denominator_value") > 0, rate)
            columns += [as_text(rate_value).alias("rate"), rate_value.alias("rate_value")]
        return wide.select(*columns)

    return transform


def as_text(value: Column) -> Column:
    """A published number as text, `*` where it is withheld."""
    return F.coalesce(value.cast("string"), F.lit(SUPPRESSED_MARK))


def suppression_summary(protected: DataFrame) -> dict[str, int]:
    """Cells, primary and secondary suppressions (one row collected): information loss."""
    row = protected.agg(
        F.count(F.lit(1)).alias("cells"),
        F.count(F.when(F.col(SUPPRESSED) & F.col(PRIMARY), 1)).alias("primary"),
        F.count(F.when(F.col(SUPPRESSED) & ~F.col(PRIMARY), 1)).alias("secondary"),
    ).first()
    assert row is not None
    return {k: int(v) for k, v in row.asDict().items()}
