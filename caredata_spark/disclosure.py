"""The disclosure engine in order, from records to an audited public table.

Cells with every margin (`aggregates`), primary and secondary suppression
(`suppression`), protection against the table's earlier publications where it has a
period dimension (`disclosure_history`), the LP audit (`disclosure_audit`), then the public
columns. `publish` runs every configured table through `protect_table`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame

from caredata_spark.aggregates import TableShape, table_cells
from caredata_spark.disclosure_audit import audit, require_protected
from caredata_spark.disclosure_history import audit_against, numbered, protect_against
from caredata_spark.publication_tables import TableDefinition
from caredata_spark.suppression import (
    DisclosurePolicy,
    protect,
    publication,
    suppression_summary,
)


@dataclass(frozen=True)
class History:
    """Where a publication stands in a table's series: its `number`, and the `earlier`
    versions' cells (`publish/cells/<table>` rows; None for the first)."""

    number: int
    earlier: DataFrame | None = None


@dataclass(frozen=True)
class ProtectedTable:
    """A table ready to publish: `public` holds no true count; `summary` is for the log;
    `cells` (true counts: internal only) is this version for `publish/cells/<table>`, for
    a table with a period dimension published with a `History`."""

    public: DataFrame
    summary: dict[str, int]
    cells: DataFrame | None = None


def protect_table(
    records: DataFrame,
    definition: TableDefinition,
    policy: DisclosurePolicy,
    name: str,
    history: History | None = None,
) -> ProtectedTable:
    """Record-level frame -> the audited public table, or DisclosureRisk naming a cell.

    Every level of the protection is checkpointed, so the audit, the summary and the
    public table do not redo its LPs.
    """
    shape = TableShape.of(definition)
    protected = records.transform(table_cells(definition, name)).transform(protect(shape, policy))
    attack = audit(shape, policy.protection)
    cells = None
    if shape.period is not None and history is not None:
        if history.earlier is not None:
            protected = protected.transform(
                protect_against(history.earlier, history.number, shape, policy)
            )
            attack = audit_against(history.earlier, history.number, shape, policy.protection)
        cells = protected.transform(numbered(history.number))
    require_protected(protected.transform(attack), shape, name)
    rate_per = definition.rate.per if definition.rate else None
    return ProtectedTable(
        public=protected.transform(publication(shape, rate_per)),
        summary=suppression_summary(protected),
        cells=cells,
    )
