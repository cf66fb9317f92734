"""Linkage input: what linkage reads of hand-made clinical rows."""

from __future__ import annotations

import re
from pathlib import Path

from linkage_data import ALICE, clinical_rows, land, signatures
from pyspark.sql import SparkSession

from caredata_spark.linkage.records import (
    IDENTITY_COLUMNS,
    INPUT_COLUMNS,
    read_records,
    with_signature,
)
from caredata_spark.storage import open_store


def test_linkage_reads_keys_and_hashes_only(spark: SparkSession, tmp_path: Path) -> None:
    """Clear identifiers beside the hashes are neither read from disk nor carried on."""
    store = open_store(spark)
    gp = clinical_rows(spark, [("A81001/1", "A81001", ALICE)], "s1")
    with_clear = gp.selectExpr("*", "'9434765919' AS NHS_NUMBER", "'1980-03-14' AS DOB")
    land(store, tmp_path, "gp_patients", with_clear)
    land(store, tmp_path, "hes_apc", clinical_rows(spark, [("E1", "RTH", ALICE)], "s2"))

    records, versions = read_records(store, str(tmp_path), since={})

    assert versions == {"gp": 0, "hes_apc": 0}
    assert records.columns == ["source", *INPUT_COLUMNS]
    plan = records._jdf.queryExecution().executedPlan().toString()
    scans = re.findall(r"FileScan \w+ \[([^\]]*)\]", plan)
    assert len(scans) == 2
    for scan in scans:
        assert {column.split("#")[0] for column in scan.split(",")} == set(INPUT_COLUMNS)
    types = dict(records.dtypes)
    assert {types[c] for c in IDENTITY_COLUMNS} == {"binary", "array<binary>", "boolean"}
    assert sorted(r.source for r in records.collect()) == ["gp", "hes_apc"]


def test_linkage_reads_what_was_added_since_the_versions_it_is_given(spark: SparkSession, tmp_path: Path) -> None:
    store = open_store(spark)
    land(store, tmp_path, "gp_patients", clinical_rows(spark, [("A81001/1", "A81001", ALICE)], "s1"))
    land(store, tmp_path, "gp_patients", clinical_rows(spark, [("A81001/2", "A81001", ALICE)], "s2"))
    land(store, tmp_path, "hes_apc", clinical_rows(spark, [("E1", "RTH", ALICE)], "s3"))

    records, versions = read_records(store, str(tmp_path), since={"gp": 0})

    assert versions == {"gp": 1, "hes_apc": 0}
    assert sorted(r.record_key for r in records.collect()) == ["A81001/2", "E1"]


def test_signature_is_equal_exactly_when_all_hashes_are(spark: SparkSession) -> None:
    named = signatures(
        spark,
        {
            "alice": ALICE,
            "alice_again": ALICE,
            "no_postcode": ALICE.but(postcode=None),
            "other_district": ALICE.but(postcode="LS2 4AB"),
        },
    ).withColumnRenamed("signature", "name")

    digests = {bytes(r.name).decode(): bytes(r.signature) for r in with_signature(named).collect()}

    assert digests["alice"] == digests["alice_again"]
    assert len({digests["alice"], digests["no_postcode"], digests["other_district"]}) == 3
    assert {len(d) for d in digests.values()} == {16}
