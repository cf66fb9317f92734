"""Cells with margins from record-level data, and the table definitions that drive them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.aggregates import (
    COUNT,
    DENOMINATOR,
    MEASURE,
    TOTAL,
    UNKNOWN,
    VALUE,
    TableShape,
    grouping_sets,
    table_cells,
)
from caredata_spark.config import ConfigError
from caredata_spark.disclosure_audit import structure
from caredata_spark.errors import UsageError
from caredata_spark.publication_tables import (
    DEFAULT_CODES,
    Dimension,
    Filter,
    Measure,
    Rate,
    TableDefinition,
    load_publication,
)

EVENTS_SCHEMA = (
    "person_id string, area string, district string, age_band string, sex string, code string"
)
EVENTS = [  # one row per person per GP event
    ("p1", "LS", "LS1", "40-44", "1", "E11"),
    ("p1", "LS", "LS1", "40-44", "1", "E11"),  # the same person twice: counted once
    ("p2", "LS", "LS1", "40-44", "2", "I10"),
    ("p3", "LS", "LS2", "50-54", "1", "E11"),
    ("p4", "BD", "BD1", None, "2", "E119"),
]


def age_and_sex_totals() -> Column:
    return (F.col("age_band") == TOTAL) & (F.col("sex") == TOTAL)


def area_table(**changes: object) -> TableDefinition:
    fields: dict[str, object] = {
        "title": "People by area",
        "source": "gp_registered",
        "measure": Measure(count="persons"),
        "dimensions": [
            Dimension("area"),
            Dimension("district", within="area"),
            Dimension("age_band"),
            Dimension("sex"),
        ],
        "split_by": "area",
    }
    return TableDefinition(**{**fields, **changes})  # type: ignore[arg-type]


def cells_of(spark: SparkSession, definition: TableDefinition) -> DataFrame:
    return spark.createDataFrame(EVENTS, EVENTS_SCHEMA).transform(table_cells(definition, "people"))


def by_area(rows: list[tuple[str, str, int]], spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(rows, f"area string, district string, {VALUE} long")


def test_grouping_sets_cover_every_level_of_every_chain() -> None:
    sets = grouping_sets(TableShape.of(area_table()))
    assert len(sets) == 3 * 2 * 2
    assert ["area", "district", "age_band", "sex"] in sets and [] in sets
    assert ["district"] not in sets  # a district is only ever counted within its area


def test_cells_count_distinct_people_with_hierarchy_totals(spark: SparkSession) -> None:
    definition = area_table(filters=[Filter(column="code", values=["E10", "E11"], match="prefix")])
    got = cells_of(spark, definition).where(age_and_sex_totals()).select("area", "district", VALUE)
    expected = by_area(
        [
            ("BD", "BD1", 1),
            ("BD", TOTAL, 1),
            ("LS", "LS1", 1),
            ("LS", "LS2", 1),
            ("LS", TOTAL, 2),
            (TOTAL, TOTAL, 3),
        ],
        spark,
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_missing_categories_are_unknown_not_totals(spark: SparkSession) -> None:
    got = cells_of(spark, area_table()).where(
        (F.col("area") == "BD") & (F.col("district") == "BD1")
    )
    ages = {row["age_band"] for row in got.collect()}
    assert ages == {UNKNOWN, TOTAL}


def test_record_counts_add_up_along_every_relation(spark: SparkSession) -> None:
    definition = area_table(measure=Measure(count="records"))
    cells = cells_of(spark, definition).toPandas()
    relations = structure(cells, TableShape.of(definition))
    assert relations.children.shape[0] > 0
    equalities, lower, upper = relations.rows()
    assert not lower.any() and not upper.any()
    assert not (equalities @ cells[VALUE].to_numpy()).any()


def test_rate_tables_count_numerator_and_denominator_in_one_pass(spark: SparkSession) -> None:
    definition = area_table(rate=Rate(numerator=[Filter(column="code", values=["E11"])]))
    got = (
        cells_of(spark, definition)
        .where(age_and_sex_totals() & (F.col("district") == TOTAL))
        .select("area", MEASURE, VALUE)
    )
    expected = spark.createDataFrame(
        [
            ("BD", COUNT, 0),
            ("BD", DENOMINATOR, 1),
            ("LS", COUNT, 2),
            ("LS", DENOMINATOR, 3),
            (TOTAL, COUNT, 2),
            (TOTAL, DENOMINATOR, 4),
        ],
        f"area string, {MEASURE} string, {VALUE} long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_source_without_a_needed_column_is_refused(spark: SparkSession) -> None:
    definition = area_table(filters=[Filter(column="snomed_code", values=["1"])])
    with pytest.raises(UsageError, match="table people: source lacks column\\(s\\) snomed_code"):
        cells_of(spark, definition)


# --- definitions in conf/publication.yaml ------------------------------------------------


def test_shipped_definitions_load_with_code_lists_resolved() -> None:
    publication = load_publication()
    assert len(publication.tables) >= 6
    diabetes = publication.tables["diabetes_by_area_age_sex"]
    assert diabetes.filters[0].code_list == "diabetes" and "44054006" in diabetes.filters[0].values
    assert diabetes.hierarchies() == (("area", "district"), ("age_band",), ("sex",))
    assert publication.disclosure.max_small == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"filters": [{"column": "snomed_code", "code_list": "diabetics"}]},
            "tables.t.filters[0].code_list: unknown code list 'diabetics'",
        ),
        ({"split_by": "district"}, "tables.t.split_by: 'district' is not an outermost dimension"),
        (
            {"measure": {"count": "people"}},
            "tables.t.measure.count: expected one of persons, records",
        ),
        ({"measure": {"count": "persons", "kind": "x"}}, "tables.t.measure.kind: unknown field"),
        ({"rate": {"numerator": []}}, "tables.t.rate.numerator: at least one filter"),
        ({"dimensions": []}, "tables.t.dimensions: at least one dimension"),
    ],
)
def test_definition_errors_name_the_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    table = {
        "title": "T",
        "source": "s",
        "measure": {"count": "persons"},
        "dimensions": [{"name": "area"}, {"name": "district", "within": "area"}, {"name": "sex"}],
    }
    conf = tmp_path / "publication.yaml"
    conf.write_text(yaml.safe_dump({"tables": {"t": {**table, **change}}}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_publication(conf, DEFAULT_CODES)


def test_nesting_must_point_to_an_earlier_dimension() -> None:
    with pytest.raises(
        ConfigError, match="dimensions\\[0\\].within: 'area' must be a dimension listed before it"
    ):
        TableDefinition(
            title="T",
            source="s",
            measure=Measure(count="records"),
            dimensions=[Dimension("district", within="area"), Dimension("area")],
        )
