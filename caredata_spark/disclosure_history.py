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
- a variable per cell of each version, except that a period cell (a named month, not a
  total over months) with the same categories and the same true count in several versions
  is one variable: an attacker can equate them. A count that changed (late records) is a
  variable of its own, since nothing published says by how much it changed;
- each version's relations (totals and their parts) and rate pairs, over its variables;
- each variable's published interval, intersected over the versions that show it.

`protect_with_history` then gives every shared cell its earlier status (shown before:
shown again, it is known anyway; hidden before: hidden again, or the new version gives it
away), attacks the hidden small counts of every version and mends those too narrow with
complements among the new version's own cells, one at a time (`suppress_in_turn`).
`audit_with_history` attacks the same model before the table is published. An earlier
count already too narrow without the new version (the rule was widened since, or its
publication predates this module) cannot be mended by hiding more now; it is left out of
both, and counted in the log, so that it does not block every later publication.
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
    Solver,
    Structure,
    attack,
    audit_schema,
    hidden_bounds,
    no_pairs,
    per_subtable,
    structure,
    whole_table,
)
from caredata_spark.observability import get_logger
from caredata_spark.suppression import (
    DisclosurePolicy,
    protected_columns,
    protected_schema,
    suppress_in_turn,
    too_narrow,
)

LOG = get_logger("disclosure_history")
PUBLICATION = "publication"  # the number of the publication a version of the cells belongs to
DEFINITION = "definition"  # fingerprint of the table definition the cells were counted by


@dataclass(frozen=True)
class JointModel:
    """Every version's cells as variables of one model (see the module docstring).

    `variable` maps each row of the cells given to its variable; `cells` has one row per
    variable: its categories and measure, VALUE, SUPPRESSED (hidden in every version that
    has it), PRIMARY, FORCED, LOWER/UPPER (the intersection of its published intervals),
    `in_new` and `in_earlier` (which versions have it) and `shown_earlier`. `earlier` is
    the relations of the earlier versions only: what was known before this one.
    """

    cells: pd.DataFrame
    relations: Structure
    earlier: Structure
    variable: np.ndarray


def identity(cells: pd.DataFrame, shape: TableShape) -> pd.Series:
    """What makes two rows one variable: a period cell is its categories and true count in
    any version; any other cell is its categories in one publication."""
    keys = cells[MEASURE].astype(str)
    for column in shape.dimensions:
        keys = keys + "\x1f" + cells[column].astype(str)
    assert shape.period is not None
    shared = cells[shape.period].astype(str) != TOTAL
    own = "w\x1f" + cells[PUBLICATION].astype(str) + "\x1f" + keys
    same = "p\x1f" + keys + "\x1f" + cells[VALUE].astype(str)
    return same.where(shared, own)


def joint_model(cells: pd.DataFrame, shape: TableShape, number: int) -> JointModel:
    """One model of the versions in `cells` (a PUBLICATION column; `number` is the new one)."""
    variable, _ = pd.factorize(identity(cells, shape), sort=True)
    n = int(variable.max()) + 1 if len(variable) else 0
    new = cells[PUBLICATION].to_numpy() == number
    hidden = cells[SUPPRESSED].to_numpy(bool)
    rows = pd.DataFrame(
        {
            "variable": variable,
            "new": new,
            "earlier": ~new,
            "shown_earlier": ~new & ~hidden,
            "hidden": hidden,
            PRIMARY: cells[PRIMARY].to_numpy(bool),
            FORCED: cells[FORCED].to_numpy(bool),
            LOWER: cells[LOWER].to_numpy(float),
            UPPER: cells[UPPER].to_numpy(float),
        }
    )
    per = rows.groupby("variable").agg(
        in_new=("new", "any"),
        in_earlier=("earlier", "any"),
        shown_earlier=("shown_earlier", "any"),
        **{SUPPRESSED: ("hidden", "all")},
        **{PRIMARY: (PRIMARY, "any"), FORCED: (FORCED, "any")},
        **{LOWER: (LOWER, "max"), UPPER: (UPPER, "min")},
    )
    described = (
        cells.assign(_variable=variable)
        .drop_duplicates("_variable")
        .set_index("_variable")
        .sort_index()[[*shape.dimensions, MEASURE, VALUE]]
    )
    joint = pd.concat([described, per], axis=1).reset_index(drop=True)
    joint[INHERITED] = False
    joint[SUBTABLE] = WHOLE_TABLE
    return JointModel(
        joint,
        _relations(cells, shape, variable, n),
        _relations(cells[~new], shape, variable[~new], n),
        variable,
    )


def _relations(cells: pd.DataFrame, shape: TableShape, variable: np.ndarray, n: int) -> Structure:
    """Each version's relations over the joint variables, a relation shared by versions once."""
    parents, children, below, above = [], [], [], []
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
    if not parents:
        return Structure(no_pairs(), sp.csr_matrix((0, n)), shape.additive)
    parent = np.concatenate(parents).astype(np.int64)
    matrix = sp.vstack(children).tocsr()
    matrix.sort_indices()
    # a month's relations recur in every version covering it: one of each is enough
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


def sensitive_cells(model: JointModel, shape: TableShape, rule: ProtectionRule) -> np.ndarray:
    """The hidden small (or forced) counts to protect: of every version, except earlier
    ones the earlier versions alone already confine too narrowly (logged)."""
    cells = model.cells
    sensitive = cells[SUPPRESSED].to_numpy(bool) & (
        cells[PRIMARY].to_numpy(bool) | cells[FORCED].to_numpy(bool)
    )
    old = np.flatnonzero(sensitive & cells["in_earlier"].to_numpy(bool))
    if old.size == 0:
        return sensitive
    value = cells[VALUE].to_numpy(float)
    bounds = hidden_bounds(
        cells[SUPPRESSED].to_numpy(bool), cells[LOWER].to_numpy(float), cells[UPPER].to_numpy(float)
    )
    narrow, _ = too_narrow(Solver(model.earlier), value, bounds, old, rule)
    if narrow.size:  # in the task's (executor's) log: a warning, as nothing configures it there
        LOG.warning(json.dumps({"event": "disclosure_history.already_narrow", "cells": int(narrow.size)}))
    sensitive[narrow] = False
    return sensitive


def protect_with_history(
    cells: pd.DataFrame, shape: TableShape, policy: DisclosurePolicy, number: int
) -> pd.DataFrame:
    """The new version's cells (PUBLICATION `number`) with statuses that hold against
    every earlier version in `cells` too (see the module docstring)."""
    cells = cells.sort_values([PUBLICATION, *shape.dimensions, MEASURE]).reset_index(drop=True)
    model = joint_model(cells, shape, number)
    joint = model.cells
    new_rows = (cells[PUBLICATION] == number).to_numpy()
    in_earlier = joint["in_earlier"].to_numpy(bool)
    hidden_now = np.zeros(len(joint), dtype=bool)
    hidden_now[model.variable[new_rows]] = cells.loc[new_rows, SUPPRESSED].to_numpy(bool)
    # a cell shown before is known; one hidden before must stay hidden
    suppressed = np.where(in_earlier, ~joint["shown_earlier"].to_numpy(bool), hidden_now)
    joint[SUPPRESSED] = suppressed
    value = joint[VALUE].to_numpy(float)
    depth = (joint[list(shape.split_chain)] != TOTAL).sum(axis=1).to_numpy()
    final = suppress_in_turn(
        model.relations,
        value,
        (joint[LOWER].to_numpy(float), joint[UPPER].to_numpy(float)),
        suppressed,
        sensitive_cells(model, shape, policy.protection),
        joint["in_new"].to_numpy(bool) & ~in_earlier & ~suppressed & (value > 0),
        policy.protection,
        depth,
    )
    new = cells[new_rows]
    after = final[model.variable[new_rows]]
    return new.assign(**{SUPPRESSED: after})[protected_columns(shape)]


def audit_with_history(
    cells: pd.DataFrame, shape: TableShape, rule: ProtectionRule, number: int, exact: bool = False
) -> pd.DataFrame:
    """`disclosure_audit.attack` on the joint model of the versions in `cells`: one row per
    sensitive hidden count of any version (its categories name it)."""
    cells = cells.sort_values([PUBLICATION, *shape.dimensions, MEASURE]).reset_index(drop=True)
    model = joint_model(cells, shape, number)
    sensitive = sensitive_cells(model, shape, rule)
    return attack(model.cells, model.relations, sensitive, shape, rule, exact)


# --- Spark ------------------------------------------------------------------------------


def numbered(number: int, definition: str) -> Callable[[DataFrame], DataFrame]:
    """A version's protected cells as `publish/cells` rows: its publication and definition."""

    def transform(protected: DataFrame) -> DataFrame:
        return protected.withColumn(PUBLICATION, F.lit(number).cast("long")).withColumn(
            DEFINITION, F.lit(definition)
        )

    return transform


def with_earlier(earlier: DataFrame, number: int, definition: str) -> Callable[[DataFrame], DataFrame]:
    """Protected cells of the new version, numbered, beside the earlier versions' cells,
    as one sub-table: the joint model is one task, its size the tables', not the records'."""

    def transform(protected: DataFrame) -> DataFrame:
        new = protected.transform(numbered(number, definition))
        return new.unionByName(earlier.select(*new.columns)).transform(whole_table)

    return transform


def protect_against(
    earlier: DataFrame, number: int, definition: str, shape: TableShape, policy: DisclosurePolicy
) -> Callable[[DataFrame], DataFrame]:
    """Protected cells (`suppression.protect`) -> the same cells with the statuses
    `protect_with_history` sets against the `earlier` versions (`publish/cells` rows)."""

    def solve(pdf: pd.DataFrame) -> pd.DataFrame:
        return protect_with_history(pdf.reset_index(drop=True), shape, policy, number)

    def transform(protected: DataFrame) -> DataFrame:
        return (
            protected.transform(with_earlier(earlier, number, definition))
            .transform(per_subtable(solve, protected_schema(shape)))
            .localCheckpoint()
        )

    return transform


def audit_against(
    earlier: DataFrame, number: int, definition: str, shape: TableShape, rule: ProtectionRule
) -> Callable[[DataFrame], DataFrame]:
    """Protected cells -> one row per sensitive hidden count of any version, as
    `disclosure_audit.audit` gives for one version."""

    def solve(pdf: pd.DataFrame) -> pd.DataFrame:
        return audit_with_history(pdf.reset_index(drop=True), shape, rule, number)

    def transform(protected: DataFrame) -> DataFrame:
        return protected.transform(with_earlier(earlier, number, definition)).transform(
            per_subtable(solve, audit_schema(shape))
        )

    return transform
