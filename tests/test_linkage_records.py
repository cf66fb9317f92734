"""Linkage input: what linkage reads of hand-made clinical rows."""

from __future__ import annotations

import re
from pathlib import Path

from linkage_data import ALICE, BOB, clinical_rows, h, land, reference, signatures
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark.linkage.deterministic import link_deterministic
from caredata_spark.linkage.records import (
    DOB_PARTS,
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


def test_a_missing_dob_has_no_dob_parts_even_where_ingest_once_hashed_one(spark: SparkSession, tmp_path: Path) -> None:
    """Ingest used to hash '' as `h_dob_yd` of every record without a DOB: two missing DOBs
    were a partial DOB agreement, and the same NHS number linked by det_3/det_4. Read back,
    a DOB part without a DOB is null, so such records link by what they do share (det_5,
    det_8), even against a person whose index identity still holds the stale hash."""
    stale = F.lit(h("yd", ""))  # the hash every missing DOB got
    no_dob = BOB.but(dob=None)
    store = open_store(spark)
    rows = clinical_rows(spark, [("E1", "RTH", no_dob), ("E2", "RTH", no_dob.but(postcode="LS9 9ZZ"))], "s1")
    land(store, tmp_path, "hes_apc", rows.withColumn("h_dob_yd", stale))
    person = reference(spark, {"bob": [no_dob]}).withColumn("h_dob_yd", stale)

    records, _ = read_records(store, str(tmp_path), since={})
    keyed = records.select(F.col("record_key").cast("binary").alias("signature"), *IDENTITY_COLUMNS)
    linked = {bytes(r.signature).decode(): r.match_step for r in link_deterministic(keyed, person).collect()}

    assert [r[c] for r in records.collect() for c in DOB_PARTS] == [None] * 2 * len(DOB_PARTS)
    assert linked == {"E1": "det_5", "E2": "det_8"}
