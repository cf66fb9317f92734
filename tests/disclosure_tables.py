"""Small tables of cells with margins, built independently of the engine, for its tests.

The rounding and published-interval formulas are written out again here on purpose: they
are the test oracle the Spark expressions of `suppression.mark_primary` are checked against.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from caredata_spark.aggregates import (
    COUNT,
    DENOMINATOR,
    GROUPING_ID,
    MEASURE,
    TOTAL,
    VALUE,
    TableShape,
)
from caredata_spark.disclosure_audit import INHERITED, LOWER, PRIMARY, SUBTABLE, UPPER
from caredata_spark.suppression import FORCED, INHERITED_SUPPRESSED, ROUNDED

SPREAD = {"nearest5": (2, 2), "midpoint6": (2, 3)}


def oracle_rounded(x: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "midpoint6":
        return np.where(x == 0, 0, np.ceil(x / 6) * 6 - 3).astype(np.int64)
    return (np.floor((x + 2) / 5) * 5).astype(np.int64)


def flat_shape(ndim: int) -> TableShape:
    return TableShape(hierarchies=tuple((f"d{i}",) for i in range(ndim)))


def cells_with_margins(interior: np.ndarray) -> pd.DataFrame:
    """Every cell of an n-D table and all its margins: columns d0..dn-1 ('Total' in margins)."""
    rows = []
    for combo in itertools.product(*([*range(n), None] for n in interior.shape)):
        index = tuple(slice(None) if i is None else i for i in combo)
        labels = {f"d{a}": TOTAL if i is None else f"c{i}" for a, i in enumerate(combo)}
        rows.append({**labels, VALUE: int(interior[index].sum())})
    cells = pd.DataFrame(rows)
    return cells[cells[VALUE] > 0].reset_index(drop=True)  # empty cells are not produced


def marked(cells: pd.DataFrame, rounding: str = "nearest5", max_small: int = 7) -> pd.DataFrame:
    """What `mark_primary` adds, plus the columns of a single top-level sub-table."""
    value = cells[VALUE].to_numpy()
    rounded = oracle_rounded(value, rounding)
    below, above = SPREAD[rounding]
    return cells.assign(
        **{
            GROUPING_ID: 0,
            MEASURE: "count",
            PRIMARY: (value >= 1) & (value <= max_small),
            ROUNDED: rounded,
            LOWER: np.where(rounded == 0, 0, np.maximum(rounded - below, max_small + 1)).astype(
                float
            ),
            UPPER: np.where(rounded == 0, 0, rounded + above).astype(float),
            FORCED: False,
            INHERITED: False,
            INHERITED_SUPPRESSED: False,
            SUBTABLE: json.dumps(["0"]),
        }
    )


def interiors(ndim: int, max_side: int) -> st.SearchStrategy[np.ndarray]:
    """Interiors mixing zeros, small counts (1-7) and larger counts, as real tables do."""
    count = st.one_of(st.just(0), st.integers(1, 7), st.integers(8, 60))
    return st.lists(st.integers(2, max_side), min_size=ndim, max_size=ndim).flatmap(
        lambda sides: st.lists(
            count, min_size=int(np.prod(sides)), max_size=int(np.prod(sides))
        ).map(lambda values: np.array(values, dtype=np.int64).reshape(sides))
    )


def rate_cells(numerator: np.ndarray, denominator: np.ndarray) -> pd.DataFrame:
    """Marked cells of a rate table: a numerator cell (zero ones too) for each denominator
    cell, as `aggregates.table_cells` counts them; numerator <= denominator everywhere."""
    denominators = cells_with_margins(denominator)
    dims = [c for c in denominators.columns if c != VALUE]
    numerators = denominators[dims].merge(cells_with_margins(numerator), how="left", on=dims)
    numerators[VALUE] = numerators[VALUE].fillna(0).astype(np.int64)
    return pd.concat(
        [
            marked(numerators).assign(**{MEASURE: COUNT}),
            marked(denominators).assign(**{MEASURE: DENOMINATOR}),
        ],
        ignore_index=True,
    )


def rate_interiors(ndim: int, max_side: int) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """(numerator, denominator) interiors: each numerator a share of its denominator."""
    return interiors(ndim, max_side).flatmap(
        lambda denominator: st.lists(
            st.integers(0, 100), min_size=denominator.size, max_size=denominator.size
        ).map(
            lambda shares: (
                denominator * np.array(shares).reshape(denominator.shape) // 100,
                denominator,
            )
        )
    )
