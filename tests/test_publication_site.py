"""Every page of the publication site parses, and its chart shows what the table says."""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from caredata_spark.aggregates import (
    COUNT,
    DENOMINATOR,
    GROUPING_ID,
    MEASURE,
    TOTAL,
    VALUE,
    TableShape,
)
from caredata_spark.disclosure_audit import SUPPRESSED
from caredata_spark.publication_site import SiteTable, write_site
from caredata_spark.publication_tables import Dimension, Filter, Measure, Rate, TableDefinition
from caredata_spark.suppression import ROUNDED, DisclosurePolicy, publication

VOID = {"meta", "br", "img", "link", "input", "hr"}
SVG = "{http://www.w3.org/2000/svg}"


class Balanced(HTMLParser):
    """Fails on any end tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(v for k, v in attrs if k == "href" and v)
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect .../> in inline SVG

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()


def public_table(spark: SparkSession, rate: bool) -> pd.DataFrame:
    """A public frame built by the real `publication` transform from protected cells."""
    shape = TableShape(hierarchies=(("practice",),))
    values = {"P1": (12, 1000, False), "P2": (5, 800, True), "P3": (40, 900, False)}
    values[TOTAL] = (57, 2700, False)
    rows = []
    for practice, (count, denominator, hidden) in values.items():
        rows.append((practice, 0, COUNT, count, int(np.floor((count + 2) / 5) * 5), hidden))
        if rate:
            rows.append((practice, 0, DENOMINATOR, denominator, denominator, False))
    protected = spark.createDataFrame(
        rows,
        f"practice string, {GROUPING_ID} int, {MEASURE} string, {VALUE} long, "
        f"{ROUNDED} long, {SUPPRESSED} boolean",
    )
    return protected.transform(publication(shape, 1000 if rate else None)).toPandas()


def definition(rate: bool) -> TableDefinition:
    return TableDefinition(
        title="Patients by practice <&>",
        description="Registered patients.",
        source="gp_registered",
        measure=Measure(count="persons", label="Patients"),
        dimensions=[Dimension("practice", label="GP practice")],
        rate=(
            Rate(numerator=[Filter(column="code", values=["1"])], label="Per 1,000")
            if rate
            else None
        ),
    )


def test_every_page_parses_and_charts_each_category(spark: SparkSession, tmp_path: Path) -> None:
    summary = {"cells": 4, "primary": 1, "secondary": 0}
    tables = [
        SiteTable(name, definition(rate), public_table(spark, rate), summary)
        for name, rate in (("counts", False), ("rates", True))
    ]
    pages = write_site(tables, DisclosurePolicy(), tmp_path)
    assert [p.name for p in pages] == ["index.html", "counts.html", "rates.html"]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        parser = Balanced()
        parser.feed(text)
        parser.close()
        assert parser.open == [], f"{page.name}: unclosed {parser.open}"
        for link in parser.links:
            assert (tmp_path / link).exists(), f"{page.name} links to missing {link}"
        if page.name == "index.html":
            continue
        (svg_text,) = re.findall(r"<svg.*?</svg>", text, flags=re.S)
        svg = ET.fromstring(svg_text)
        labels = [t.text for t in svg.iter(f"{SVG}text")]
        assert labels.count("*") == 1  # P2 is hidden, in the chart as in the table
        assert {"P1", "P2", "P3"} <= set(labels) and TOTAL not in labels
        assert "&lt;&amp;&gt;" in text  # titles are escaped
        with open(tmp_path / f"{page.stem}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["practice"]: r["count"] for r in rows}["P2"] == "*"
