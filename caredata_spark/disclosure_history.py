"""Successive publications of a table protected together, not each on its own.

A table with a period dimension (months) is published again each month, its window a month
on. A month cell it shares with an earlier publication counts the same records (unless
late records changed it), but its totals over the window do not: so a new total minus the
earlier one is the month that came in minus the month that left, and a month cell one
publication hides and another shows is simply read off. Each publication passing its own
audit does not stop this: a review pinned small counts to a width of 4 in 11 of 30 random
provider x month tables published twice.

So the platform keeps each published version's cells with their true counts (internal,
`publish/cells/<table>`, never published) and protects a new version against all the
earlier ones at once, in one model (`joint_model`):
- a variable per count: a period cell (a named month, not a total over months) with the
  same categories and true count in several versions is one variable; a total over the
  window is a variable of its own publication;
- a month cell whose count late records changed is a variable of its own: the attacker is
  taken not to know by how much (taking every revision as known refused a table whenever a
  small count appeared from zero, which late records do every month);
- each version's relations (totals and their parts) and rate pairs, over its variables;
- each variable's published intervals, intersected over the versions that show it.

`protect_with_history` then settles the month cells earlier versions published, by
category whatever the count now: hidden before, hidden again (showing a revised count
next to the earlier one hidden invites taking them as equal); shown before, shown again
only when its interval adds nothing to the earlier ones (the rounding may have changed, or
the count; a small count is never shown). It attacks the hidden small counts of every
version and mends those too narrow with complements among the counts only the new
version has (its new month's cells, its window totals, revised counts not held hidden),
one at a time, each the first that widens the count's interval (`widening_complement`).
`audit_with_history` attacks the same model before the table is published.

Some widths no new version can restore: a count the earlier versions confine more
narrowly than the rule asks (the rule widened since, a count revised across the
small-number threshold), or a new total equal to such a count. `caps` measures each
sensitive count with every count only the new version has hidden; the new version must
leave at least that width, rather than be refused every month; each is counted in a
warning. Publications made before this module kept no cells: they are not modelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from caredata_spark.aggregates import MEASURE, TOTAL, VALUE, TableShape
from caredata_spark.disclosure_audit import (
    FORCED,
    INHERITED,
    LOWER,
    PRIMARY,
    SUBTABLE,
    SUPPRESSED,
    UPPER,
    WHOLE_TABLE,
    ProtectionRule,
    TOLERANCE,
    Solver,
    Structure,
    attack,
    feasibility,
    audit_schema,
    hidden_bounds,
    no_pairs,
    per_subtable,
    structure,
    to_protect,
    whole_table,
)
from caredata_spark.observability import get_logger
from caredata_spark.suppression import (
    Chooser,
    DisclosurePolicy,
    by_usefulness,
    neighbourhood,
    protected_columns,
    protected_schema,
    suppress_in_turn,
)

LOG = get_logger("disclosure_history")
PUBLICATION = "publication"  # the number of the publication a version of the cells belongs to
CATEGORY = "category"


@dataclass(frozen=True)
class JointModel:
    """Every version's cells as variables of one model (see the module docstring).

    `variable` maps each row of the cells given to its variable. `cells` has one row per
    variable: its categories, measure and VALUE; SUPPRESSED (hidden in every version that
    has it), PRIMARY, FORCED, LOWER/UPPER (the intersection of its shown intervals, else
    its own); `in_new`, `in_earlier`; CATEGORY and, per category, `seen_before` (in an
    earlier version), `shown_before` (shown in one) and `known_lower`/`known_upper` (their
    intersection); what earlier versions showed of it (`earlier_hidden`, `earlier_lower`,
    `earlier_upper`) and the new version's interval (`new_lower`, `new_upper`).
    `relations` are every version's relations and rate pairs.
    """

    cells: pd.DataFrame
    relations: Structure
    variable: np.ndarray


def categories(cells: pd.DataFrame, shape: TableShape) -> pd.Series:
    """What a cell counts: a period cell's categories mean the same in every version (a
    month is a month); any other cell's only in its own publication (a window's total)."""
    keys = cells[MEASURE].astype(str)
    for column in shape.dimensions:
        keys = keys + "\x1f" + cells[column].astype(str)
    assert shape.period is not None
    shared = cells[shape.period].astype(str) != TOTAL
    own = "w\x1f" + cells[PUBLICATION].astype(str) + "\x1f" + keys
    return ("p\x1f" + keys).where(shared, own)


def joint_model(cells: pd.DataFrame, shape: TableShape, number: int) -> JointModel:
    """One model of the versions in `cells` (a PUBLICATION column; `number` is the new one)."""
    cells = cells.reset_index(drop=True)
    category = categories(cells, shape)
    variable, _ = pd.factorize(category + "\x1f" + cells[VALUE].astype(str), sort=True)
    n = int(variable.max()) + 1 if len(variable) else 0
    new = cells[PUBLICATION].to_numpy() == number
    hidden = cells[SUPPRESSED].to_numpy(bool)
    lower, upper = cells[LOWER].to_numpy(float), cells[UPPER].to_numpy(float)
    shown_earlier = ~new & ~hidden

    rows = pd.DataFrame(
        {
            "variable": variable,
            CATEGORY: category.to_numpy(),
            "new": new,
            "earlier": ~new,
            "shown_earlier": shown_earlier,
            "hidden": hidden,
            PRIMARY: cells[PRIMARY].to_numpy(bool),
            FORCED: cells[FORCED].to_numpy(bool),
            "own_lower": lower,
            "own_upper": upper,
            LOWER: np.where(~hidden, lower, -np.inf),
            UPPER: np.where(~hidden, upper, np.inf),
            "earlier_lower": np.where(shown_earlier, lower, -np.inf),
            "earlier_upper": np.where(shown_earlier, upper, np.inf),
            "new_lower": np.where(new, lower, -np.inf),
            "new_upper": np.where(new, upper, np.inf),
        }
    )
    per = rows.groupby("variable").agg(
        **{CATEGORY: (CATEGORY, "first")},
        in_new=("new", "any"),
        in_earlier=("earlier", "any"),
        **{SUPPRESSED: ("hidden", "all")},
        **{PRIMARY: (PRIMARY, "any"), FORCED: (FORCED, "any")},
        own_lower=("own_lower", "max"),
        own_upper=("own_upper", "min"),
        **{LOWER: (LOWER, "max"), UPPER: (UPPER, "min")},
        earlier_hidden=("shown_earlier", lambda shown: not shown.any()),
        earlier_lower=("earlier_lower", "max"),
        earlier_upper=("earlier_upper", "min"),
        new_lower=("new_lower", "max"),
        new_upper=("new_upper", "min"),
    )
    # a count never shown: its own interval, which only matters if it comes to be shown
    never = per[SUPPRESSED].to_numpy(bool)
    per[LOWER] = np.where(never, per["own_lower"], per[LOWER])
    per[UPPER] = np.where(never, per["own_upper"], per[UPPER])
    by_category = rows.groupby(CATEGORY).agg(
        seen_before=("earlier", "any"),
        shown_before=("shown_earlier", "any"),
        known_lower=("earlier_lower", "max"),
        known_upper=("earlier_upper", "min"),
    )
    per = per.join(by_category, on=CATEGORY)
    described = (
        cells.assign(_variable=variable)
        .drop_duplicates("_variable")
        .set_index("_variable")
        .sort_index()[[*shape.dimensions, MEASURE, VALUE]]
    )
    joint = pd.concat([described, per], axis=1).reset_index(drop=True)
    joint[INHERITED] = False
    joint[SUBTABLE] = WHOLE_TABLE
    return JointModel(joint, _relations(cells, shape, variable, n), variable)


def _relations(cells: pd.DataFrame, shape: TableShape, variable: np.ndarray, n: int) -> Structure:
    """Each version's relations over the joint variables (one of each: a month's recur in
    every version covering it) and its rate pairs."""
    parents, children, below, above = (
        [no_pairs()],
        [sp.csr_matrix((0, n))],
        [no_pairs()],
        [no_pairs()],
    )
    of_row = pd.Series(variable, index=cells.index)
    for _, rows in cells.groupby(PUBLICATION, sort=True):
        local = structure(rows.reset_index(drop=True), shape)
        to_joint = of_row.loc[rows.index].to_numpy()
        mapping = sp.csr_matrix(
            (np.ones(len(to_joint)), (np.arange(len(to_joint)), to_joint)), shape=(len(to_joint), n)
        )
        parents.append(to_joint[local.parent])
        children.append((local.children @ mapping).tocsr())
        below.append(to_joint[local.below])
        above.append(to_joint[local.above])
    parent = np.concatenate(parents).astype(np.int64)
    matrix = sp.vstack(children).tocsr()
    matrix.sort_indices()
    relation = pd.DataFrame(
        {
            "parent": parent,
            "children": [
                matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].tobytes()
                for r in range(len(parent))
            ],
        }
    )
    keep = np.flatnonzero(~relation.duplicated().to_numpy())
    pairs = pd.DataFrame(
        {"below": np.concatenate(below), "above": np.concatenate(above)}
    ).drop_duplicates()
    return Structure(
        parent[keep],
        matrix[keep],
        shape.additive,
        pairs["below"].to_numpy(np.int64),
        pairs["above"].to_numpy(np.int64),
    )


def caps(
    model: JointModel,
    suppressed: np.ndarray,
    published: tuple[np.ndarray, np.ndarray],
    sensitive: np.ndarray,
    rule: ProtectionRule,
) -> np.ndarray:
    """Per variable, the width a new version cannot help leaving: a sensitive count's
    width with every count only the new version has hidden (new cells and revised ones;
    the counts earlier versions published keep the statuses they settled). Where that is
    below `rule` (the rule widened since, a count revised across the small-number
    threshold, a new total equal to such a count), the new version must leave no less;
    elsewhere no cap."""
    cells = model.cells
    cap = np.full(len(cells), np.inf)
    targets = np.flatnonzero(sensitive)
    if targets.size == 0:
        return cap
    new_counts = cells["in_new"].to_numpy(bool) & ~cells["in_earlier"].to_numpy(bool)
    value = cells[VALUE].to_numpy(float)
    need = rule.required(value[targets])
    bounds = hidden_bounds(suppressed | new_counts, *published)
    found = feasibility(Solver(model.relations), value, *bounds, targets, need)
    width = found.upper - found.lower
    narrow = width < need - TOLERANCE
    cap[targets[narrow]] = width[narrow]
    if narrow.any():  # in the task's (executor's) log: a warning, as nothing configures it there
        LOG.warning(
            json.dumps({"event": "disclosure_history.already_narrow", "cells": int(narrow.sum())})
        )
    return cap


def widening_complement(
    relations: Structure,
    value: np.ndarray,
    published: tuple[np.ndarray, np.ndarray],
    candidate: np.ndarray,
    window: np.ndarray,
) -> Chooser:
    """The first candidate that widens the failing count's interval, tried beside it, then
    beside those, then among the new window's totals, each pool cheapest useful first;
    when none does on its own, the first of them.

    The cheapest cell beside a count is the usual complement, but here most of a count's
    neighbours are settled by earlier versions and the narrowing comes through them: a new
    month's small count is pinned by its provider's window total minus months already
    shown, so hiding its smaller neighbours in the month helps nothing (taking them in
    turn hid whole months of a 50-provider table). Each try is a pair of LPs."""
    solver = Solver(relations)
    members = relations.members
    by_cell = members.tocsc()

    def width(cell: int, suppressed: np.ndarray) -> float:
        found = feasibility(
            solver,
            value,
            *hidden_bounds(suppressed, *published),
            np.array([cell]),
            np.ones(1),
            exact=True,
        )
        return float(found.upper[0] - found.lower[0])

    def choose(cell: int, need: float, suppressed: np.ndarray) -> int | None:
        available = candidate & ~suppressed
        near, wider = neighbourhood(members, by_cell, cell)
        before = width(cell, suppressed)
        pools = (near[available[near]], wider[available[wider]], np.flatnonzero(window & available))
        options = pd.unique(np.concatenate([by_usefulness(pool, value, need) for pool in pools]))
        for option in options:
            trial = suppressed.copy()
            trial[option] = True
            if width(cell, trial) > before + TOLERANCE:
                return int(option)
        # no one cell widens it (two together may): the first, and the next one after it
        return int(options[0]) if options.size else None

    return choose


def protect_with_history(
    cells: pd.DataFrame, shape: TableShape, policy: DisclosurePolicy, number: int
) -> pd.DataFrame:
    """The new version's cells (PUBLICATION `number`) with statuses that hold against
    every earlier version in `cells` too (see the module docstring)."""
    cells = cells.sort_values([PUBLICATION, *shape.dimensions, MEASURE]).reset_index(drop=True)
    model = joint_model(cells, shape, number)
    joint = model.cells
    new_rows = (cells[PUBLICATION] == number).to_numpy()
    in_new = joint["in_new"].to_numpy(bool)
    seen = joint["seen_before"].to_numpy(bool)
    hidden_now = np.zeros(len(joint), dtype=bool)
    hidden_now[model.variable[new_rows]] = cells.loc[new_rows, SUPPRESSED].to_numpy(bool)
    # a count hidden before stays hidden; one shown before is shown again only if its new
    # interval says nothing the earlier ones did not (the rounding may have changed, or
    # late records the count); a small count never is
    value = joint[VALUE].to_numpy(float)
    new_lower, new_upper = joint["new_lower"].to_numpy(float), joint["new_upper"].to_numpy(float)
    adds_nothing = (new_lower <= joint["known_lower"].to_numpy(float)) & (
        new_upper >= joint["known_upper"].to_numpy(float)
    )
    shown_again = (
        joint["shown_before"].to_numpy(bool) & adds_nothing & ~joint[PRIMARY].to_numpy(bool)
    )
    status = np.where(seen, ~shown_again, hidden_now)
    # a count only the new version has (new, or revised and not held hidden) may be hidden
    new_counts = in_new & ~joint["in_earlier"].to_numpy(bool)
    candidate = new_counts & ~status & (value > 0)
    # what an attacker knows of each count: what earlier versions showed, and the new
    # version's interval where it is shown (or may be: a candidate complement)
    shows_new = in_new & (~status | ~seen)
    published = (
        np.maximum(joint["earlier_lower"].to_numpy(float), np.where(shows_new, new_lower, -np.inf)),
        np.minimum(joint["earlier_upper"].to_numpy(float), np.where(shows_new, new_upper, np.inf)),
    )
    suppressed = joint["earlier_hidden"].to_numpy(bool) & np.where(in_new, status, True)
    joint[SUPPRESSED] = suppressed
    sensitive = to_protect(joint, suppressed)
    final = suppress_in_turn(
        model.relations,
        value,
        published,
        suppressed,
        sensitive,
        candidate,
        policy.protection,
        (joint[list(shape.split_chain)] != TOTAL).sum(axis=1).to_numpy(),
        caps(model, suppressed, published, sensitive, policy.protection),
        widening_complement(
            model.relations, value, published, candidate, (joint[shape.period] == TOTAL).to_numpy()
        ),
    )
    hidden_in_new = np.where(new_counts, final, status)
    new = cells[new_rows]
    return new.assign(**{SUPPRESSED: hidden_in_new[model.variable[new_rows]]})[
        protected_columns(shape)
    ]


def audit_with_history(
    cells: pd.DataFrame, shape: TableShape, rule: ProtectionRule, number: int, exact: bool = False
) -> pd.DataFrame:
    """`disclosure_audit.attack` on the joint model of the versions in `cells`: one row per
    sensitive hidden count of any version (its categories name it), each needing the
    rule's width or, for a count earlier versions already confined, no less than that."""
    cells = cells.sort_values([PUBLICATION, *shape.dimensions, MEASURE]).reset_index(drop=True)
    model = joint_model(cells, shape, number)
    joint = model.cells
    suppressed = joint[SUPPRESSED].to_numpy(bool)
    sensitive = to_protect(joint, suppressed)
    published = (joint[LOWER].to_numpy(float), joint[UPPER].to_numpy(float))
    cap = caps(model, suppressed, published, sensitive, rule)
    return attack(joint, model.relations, sensitive, shape, rule, exact, cap)


# --- Spark ------------------------------------------------------------------------------


def numbered(number: int) -> Callable[[DataFrame], DataFrame]:
    """A version's protected cells as `publish/cells` rows: with its publication."""

    def transform(protected: DataFrame) -> DataFrame:
        return protected.withColumn(PUBLICATION, F.lit(number).cast("long"))

    return transform


def with_earlier(earlier: DataFrame, number: int) -> Callable[[DataFrame], DataFrame]:
    """Protected cells of the new version, numbered, beside the earlier versions' cells,
    as one sub-table: the joint model is one task, its size the tables', not the records'."""

    def transform(protected: DataFrame) -> DataFrame:
        new = protected.transform(numbered(number))
        return new.unionByName(earlier.select(*new.columns)).transform(whole_table)

    return transform


def protect_against(
    earlier: DataFrame, number: int, shape: TableShape, policy: DisclosurePolicy
) -> Callable[[DataFrame], DataFrame]:
    """Protected cells (`suppression.protect`) -> the same cells with the statuses
    `protect_with_history` sets against the `earlier` versions (`publish/cells` rows)."""

    def solve(pdf: pd.DataFrame) -> pd.DataFrame:
        return protect_with_history(pdf.reset_index(drop=True), shape, policy, number)

    def transform(protected: DataFrame) -> DataFrame:
        return (
            protected.transform(with_earlier(earlier, number))
            .transform(per_subtable(solve, protected_schema(shape)))
            .localCheckpoint()
        )

    return transform


def audit_against(
    earlier: DataFrame, number: int, shape: TableShape, rule: ProtectionRule
) -> Callable[[DataFrame], DataFrame]:
    """Protected cells -> one row per sensitive hidden count of any version, as
    `disclosure_audit.audit` gives for one version."""

    def solve(pdf: pd.DataFrame) -> pd.DataFrame:
        return audit_with_history(pdf.reset_index(drop=True), shape, rule, number)

    def transform(protected: DataFrame) -> DataFrame:
        return protected.transform(with_earlier(earlier, number)).transform(
            per_subtable(solve, audit_schema(shape))
        )

    return transform
