"""Cells of a published table, margins included, from a record-level frame in one pass.

Every cell the public will see is computed here: the finest cells, every row/column/grand
total and every hierarchy total (area above district), as one `GROUP BY GROUPING SETS`
aggregation, so totals are counted from the records (a distinct-person total is not the
sum of its parts when a person can fall in several cells) and the table is read once.

A cell frame has one string column per dimension, where `TOTAL` marks a margin,
`grouping_id` (Spark's bit mask of the dimensions summed over), `measure` (which count:
`count`, or `denominator` for a rate table) and `value` (the true count, never published).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.errors import UsageError

if TYPE_CHECKING:
    from caredata_spark.publication_tables import Filter, Measure, TableDefinition

TOTAL = "Total"
UNKNOWN = "Unknown"
COUNT = "count"
DENOMINATOR = "denominator"
MEASURE = "measure"
VALUE = "value"
GROUPING_ID = "grouping_id"


@dataclass(frozen=True)
class TableShape:
    """The additive structure of a table of cells: its dimensions and where it splits.

    `hierarchies` lists dimension chains coarsest first; a plain dimension is a chain of
    one. `split_by` names the root of a chain whose categories become sub-tables that can
    be protected in parallel below the top level. `additive` says totals equal the sum of
    their parts (see `publication_tables.Measure`). `period` names the dimension of
    calendar periods, whose cells successive publications share (`disclosure_history`).
    """

    hierarchies: tuple[tuple[str, ...], ...]
    split_by: str | None = None
    additive: bool = True
    period: str | None = None

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(itertools.chain.from_iterable(self.hierarchies))

    @property
    def split_chain(self) -> tuple[str, ...]:
        """The chain split into sub-tables, or () when the table is one sub-table."""
        return next((c for c in self.hierarchies if c[0] == self.split_by), ())

    @classmethod
    def of(cls, definition: TableDefinition) -> TableShape:
        return cls(
            hierarchies=definition.hierarchies(),
            split_by=definition.split_by,
            additive=definition.measure.additive,
            period=definition.period,
        )


def grouping_sets(shape: TableShape) -> list[list[str]]:
    """Every combination of one level per chain: a chain of k columns has k+1 levels
    (its k prefixes and the total), so area > district x age x sex gives 3 * 2 * 2 sets."""
    levels = [[list(chain[:i]) for i in range(len(chain), -1, -1)] for chain in shape.hierarchies]
    return [list(itertools.chain.from_iterable(combo)) for combo in itertools.product(*levels)]


def filter_condition(f: Filter) -> Column:
    """A record filter as one Spark predicate (a prefix list becomes one OR of startswith)."""
    column = F.col(f.column).cast("string")
    if f.match == "prefix":
        return reduce(lambda a, b: a | b, [column.startswith(p) for p in f.values])
    return column.isin(list(f.values))


def all_of(filters: Sequence[Filter]) -> Column:
    return reduce(lambda a, b: a & b, [filter_condition(f) for f in filters], F.lit(True))


def _measure(measure: Measure, condition: Column) -> Column:
    """Count persons or records among rows meeting `condition`; nulls are not counted."""
    if measure.count == "persons":
        return F.count_distinct(F.when(condition, F.col(measure.column)))
    return F.count(F.when(condition, F.lit(1)))


def require_columns(df: DataFrame, columns: Sequence[str], table: str) -> None:
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise UsageError(f"table {table}: source lacks column(s) {', '.join(missing)}")


def summed_over(position: int, n_dims: int) -> Column:
    """Whether the dimension at `position` is a margin: its bit in grouping_id (first = highest)."""
    return F.shiftright(F.col(GROUPING_ID), n_dims - 1 - position).bitwiseAND(1) == 1


def table_cells(definition: TableDefinition, name: str = "") -> Callable[[DataFrame], DataFrame]:
    """Record-level frame -> every cell of the table, margins included, in long format.

    One aggregation with grouping sets; a rate table counts numerator and denominator in
    the same pass. Dimensions become strings; a real null becomes `UNKNOWN`, so that only
    margins carry `TOTAL` (told apart by the grouping_id bits, not by null).
    """
    shape = TableShape.of(definition)
    dims = list(shape.dimensions)
    filters = list(definition.filters)
    numerator = list(definition.rate.numerator) if definition.rate else []
    needed = [*dims, *(f.column for f in filters + numerator)]
    if definition.measure.count == "persons":
        needed.append(definition.measure.column)

    def transform(records: DataFrame) -> DataFrame:
        require_columns(records, needed, name or definition.title)
        kept = records.where(all_of(filters)) if filters else records
        counts = {COUNT: _measure(definition.measure, all_of(numerator))}
        if definition.rate:
            counts[DENOMINATOR] = _measure(definition.measure, F.lit(True))
        aggregated = kept.groupingSets(grouping_sets(shape), *dims).agg(
            F.grouping_id(*dims).alias(GROUPING_ID),
            *(count.alias(measure) for measure, count in counts.items()),
        )
        labelled = [
            F.when(summed_over(i, len(dims)), F.lit(TOTAL))
            .otherwise(F.coalesce(F.col(d).cast("string"), F.lit(UNKNOWN)))
            .alias(d)
            for i, d in enumerate(dims)
        ]
        long = F.explode(
            F.array(*(F.struct(F.lit(m).alias(MEASURE), F.col(m).alias(VALUE)) for m in counts))
        ).alias("cell")
        return (
            aggregated.select(*labelled, F.col(GROUPING_ID).cast("int").alias(GROUPING_ID), long)
            .select(*dims, GROUPING_ID, "cell.*")
            .select(*dims, GROUPING_ID, MEASURE, F.col(VALUE).cast("long").alias(VALUE))
        )

    return transform
