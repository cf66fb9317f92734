"""The static publication site: an index and one page per table, readable without a tool.

Each page leads with a chart (inline SVG, no scripts or external assets, so it renders
anywhere and can be archived), then the numbers behind it, a link to the full CSV and a
methods note saying what was hidden and why. Input is the public table only (see
`suppression.publication`): nothing here can see a true count. Public tables are bounded
by their cell count, not the population, so collecting one to the driver is fine.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from caredata_spark.aggregates import TOTAL
from caredata_spark.publication_tables import TableDefinition
from caredata_spark.suppression import SUPPRESSED_MARK, DisclosurePolicy

MAX_BARS = 40
STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem}table{border-collapse:collapse;margin:1rem 0}
td,th{border-bottom:1px solid #ddd;padding:.25rem .75rem;text-align:right}
td:first-child,th:first-child{text-align:left}.note{background:#f4f6f8;padding:1rem}
"""
ROUNDING_TEXT = {
    "nearest5": "rounded to the nearest 5",
    "midpoint6": "rounded to the midpoint of their band of 6 (1-6 to 3, 7-12 to 9, ...)",
}


@dataclass(frozen=True)
class SiteTable:
    """One published table: its definition, public rows and suppression counts."""

    name: str
    definition: TableDefinition
    public: pd.DataFrame
    summary: dict[str, int]


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def headline(table: SiteTable) -> tuple[str, pd.DataFrame]:
    """The categories of the first dimension, every other dimension at its total."""
    dims = [d for chain in table.definition.hierarchies() for d in chain]
    first = dims[0]
    others = (table.public[[d for d in dims if d != first]] == TOTAL).all(axis=1)
    rows = table.public[others & (table.public[first] != TOTAL)]
    return first, rows.sort_values(first).reset_index(drop=True)


def bar_chart(labels: Sequence[str], values: Sequence[float | None], caption: str) -> str:
    """Horizontal bars; a withheld value is an outlined stub marked `*`."""
    bar_height, label_width, width = 18, 160, 640
    known = [v for v in values if v is not None]
    top = max(known, default=0.0) or 1.0
    height = bar_height * len(labels) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{html.escape(caption)}</title>",
    ]
    for i, (label, value) in enumerate(zip(labels, values)):
        y = 20 + i * bar_height
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 13}" font-size="12" '
            f'text-anchor="end">{html.escape(label)}</text>'
        )
        if value is None:
            parts.append(
                f'<rect x="{label_width}" y="{y + 2}" width="12" height="{bar_height - 4}" '
                'fill="none" stroke="#888"/>'
                f'<text x="{label_width + 18}" y="{y + 13}" font-size="12">{SUPPRESSED_MARK}</text>'
            )
            continue
        length = (width - label_width - 70) * value / top
        parts.append(
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" '
            f'height="{bar_height - 4}" fill="#005eb8"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 13}" font-size="12">{value:g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def methods_note(table: SiteTable, policy: DisclosurePolicy) -> str:
    cells, primary, secondary = (table.summary[k] for k in ("cells", "primary", "secondary"))
    rate = table.definition.rate
    rate_text = (
        f" Rates are computed from the published counts and shown as {SUPPRESSED_MARK} "
        "whenever either count is."
        if rate
        else ""
    )
    return (
        '<div class="note"><h2>How these figures were protected</h2>'
        f"<p>Counts of 1 to {policy.max_small} are shown as {SUPPRESSED_MARK}. Every other "
        f"count, totals included, is {ROUNDING_TEXT[policy.rounding]}; totals are rounded "
        f"from the exact figures, so they need not equal the sum of the rounded parts.{rate_text}</p>"
        f"<p>Of {cells:,} figures in this table, {primary:,} were hidden as small counts and "
        f"{secondary:,} more so that no hidden figure can be worked out by subtracting others "
        "from a total. Before publication every hidden small count was checked by solving "
        "linear programmes for the lowest and highest values consistent with everything "
        f"published: each could lie anywhere in a range at least "
        f"{policy.protection.min_width} wide.</p></div>"
    )


def table_page(table: SiteTable, policy: DisclosurePolicy, csv_name: str) -> str:
    definition = table.definition
    dimension, rows = headline(table)
    label = next(d.heading for d in definition.dimensions if d.name == dimension)
    measure = "rate_value" if definition.rate else "count_value"
    caption = (definition.rate.label if definition.rate else "") or definition.measure.label
    shown = rows.head(MAX_BARS)
    values = [None if pd.isna(v) else float(v) for v in shown[measure]]
    more = (
        f"<p>The chart shows the first {MAX_BARS} of {len(rows)} categories; the CSV has all.</p>"
        if len(rows) > MAX_BARS
        else ""
    )
    columns = ["count", *(["denominator", "rate"] if definition.rate else [])]
    headings = (
        [
            "Numerator",
            definition.measure.label or "Denominator",
            f"Rate per {definition.rate.per:,}",
        ]
        if definition.rate
        else [definition.measure.label or "Count"]
    )
    header = "".join(f"<th>{html.escape(c)}</th>" for c in [label, *headings])
    body_rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in [dimension, *columns])
        + "</tr>"
        for _, row in rows.iterrows()
    )
    return _page(
        definition.title,
        f'<p><a href="index.html">All tables</a></p><h1>{html.escape(definition.title)}</h1>'
        f"<p>{html.escape(definition.description)}</p>"
        f"<h2>{html.escape(caption or 'Count')} by {html.escape(label)}</h2>"
        f"{bar_chart(shown[dimension].astype(str).tolist(), values, caption or label)}{more}"
        f"<table><thead><tr>{header}</tr></thead><tbody>{body_rows}</tbody></table>"
        f'<p><a href="{html.escape(csv_name)}">Download every cell of this table (CSV)</a>; '
        f"{SUPPRESSED_MARK} marks a hidden figure and {TOTAL} a total.</p>"
        f"{methods_note(table, policy)}",
    )


def _withheld_note(withheld: Sequence[TableDefinition]) -> str:
    if not withheld:
        return ""
    titles = "".join(f"<li>{html.escape(d.title)}</li>" for d in withheld)
    return (
        "<h2>Not published this time</h2><p>These tables did not pass the check that no "
        f"hidden figure can be worked out from the others, so they are withheld:</p><ul>{titles}</ul>"
    )


def write_site(
    tables: Sequence[SiteTable],
    policy: DisclosurePolicy,
    out: Path,
    withheld: Sequence[TableDefinition] = (),
) -> list[Path]:
    """Write index.html, one page and one CSV per table into `out`; return the pages.

    `withheld` tables failed their audit: the index names them, so a reader knows a table
    is missing on purpose rather than by mistake.
    """
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    items = []
    for table in tables:
        csv_name = f"{table.name}.csv"
        table.public.to_csv(out / csv_name, index=False)
        page = out / f"{table.name}.html"
        page.write_text(table_page(table, policy, csv_name), encoding="utf-8")
        pages.append(page)
        items.append(
            f'<li><a href="{page.name}">{html.escape(table.definition.title)}</a>: '
            f"{html.escape(table.definition.description)}</li>"
        )
    index = out / "index.html"
    index.write_text(
        _page(
            "care.data published statistics",
            "<h1>Published statistics</h1><p>Anonymous counts from GP and hospital records. "
            f"Small numbers are hidden ({SUPPRESSED_MARK}) and others rounded; each table "
            f"explains how.</p><ul>{''.join(items)}</ul>{_withheld_note(withheld)}",
        ),
        encoding="utf-8",
    )
    return [index, *pages]
