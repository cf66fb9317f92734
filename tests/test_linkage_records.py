"""Linkage input: hand-made clinical rows (stand-in hashes) and what linkage reads of them.

The builders here are shared by every linkage test: `Ids` says what a record's identifiers
are, `identity` turns them into the hash columns the ingest job writes (sha256 stand-ins:
linkage treats hashes as opaque bytes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from caredata_spark.linkage.records import IDENTITY_COLUMNS, INPUT_COLUMNS, read_records, with_signature
from caredata_spark.storage import DeltaStore, open_store
from caredata_spark.tables import clinical, table_path

IDENTITY_DDL = (
    "h_nhs binary, h_nhs_del array<binary>, h_sex binary, h_dob binary, h_dob_swap binary, "
    "h_dob_ym binary, h_dob_yd binary, h_dob_md binary, dob_jan1 boolean, h_postcode binary, "
    "h_district binary, communal boolean"
)
CLINICAL_DDL = (
    "record_key string, provider string, activity_date date, dereg_date date, "
    f"{IDENTITY_DDL}, submission_id string"
)


def h(column: str, value: str) -> bytes:
    return hashlib.sha256(f"{column}:{value}".encode()).digest()[:16]


@dataclass(frozen=True)
class Ids:
    """Identifiers as written on one record; None = missing (or a placeholder)."""

    nhs: str | None = None
    dob: str | None = None  # YYYY-MM-DD
    sex: str | None = None  # '1' or '2'
    postcode: str | None = None  # 'LS1 4AB'
    nhs_valid: bool = True  # False: a mistyped number (fails Modulus 11, deletions still hashed)
    communal: bool = False

    def but(self, **changes: Any) -> Ids:
        return replace(self, **changes)


def identity(ids: Ids) -> dict[str, Any]:
    """The ingest job's hash columns for `ids`."""
    nhs, dob, postcode = ids.nhs, ids.dob, ids.postcode
    year, month, day = dob.split("-") if dob else (None, None, None)
    swapped = None
    if dob and int(day) <= 12 and day != month:
        swapped = h("dob", f"{year}-{day}-{month}")
    return {
        "h_nhs": h("nhs", nhs) if nhs and ids.nhs_valid else None,
        "h_nhs_del": [h("nhs_del", f"{i}:{nhs[:i]}{nhs[i + 1:]}") for i in range(10)] if nhs else None,
        "h_sex": h("sex", ids.sex) if ids.sex else None,
        "h_dob": h("dob", dob) if dob else None,
        "h_dob_swap": swapped,
        "h_dob_ym": h("ym", f"{year}-{month}") if dob else None,
        "h_dob_yd": h("yd", f"{year}-{day}") if dob else None,
        "h_dob_md": h("md", f"{month}-{day}") if dob else None,
        "dob_jan1": (month, day) == ("01", "01") if dob else None,
        "h_postcode": h("pc", postcode) if postcode else None,
        "h_district": h("district", postcode.split()[0]) if postcode else None,
        "communal": ids.communal,
    }


def signatures(spark: SparkSession, records: Mapping[str, Ids]) -> DataFrame:
    """Record signatures named by their key (signature = the name's bytes, for readability)."""
    rows = [{"signature": name.encode(), **identity(ids)} for name, ids in records.items()]
    return spark.createDataFrame(rows, f"signature binary, {IDENTITY_DDL}")


def reference(spark: SparkSession, persons: Mapping[str, Sequence[Ids]]) -> DataFrame:
    """A person index: person id -> its identities (signature = '<person>#<n>')."""
    rows = [
        {"person_id": person, "signature": f"{person}#{n}".encode(), **identity(ids)}
        for person, versions in persons.items()
        for n, ids in enumerate(versions)
    ]
    return spark.createDataFrame(rows, f"person_id string, signature binary, {IDENTITY_DDL}")


def clinical_rows(
    spark: SparkSession, records: Sequence[tuple[str, str, Ids]], submission: str
) -> DataFrame:
    """(record_key, provider, ids) rows of one submission, in the clinical tables' layout."""
    rows = [
        {
            "record_key": key,
            "provider": provider,
            "activity_date": dt.date(2024, 1, 15),
            "dereg_date": None,
            **identity(ids),
            "submission_id": submission,
        }
        for key, provider, ids in records
    ]
    return spark.createDataFrame(rows, CLINICAL_DDL)


def land(store: DeltaStore, warehouse: Path, dataset: str, frame: DataFrame) -> None:
    """Append rows to a clinical table, as the ingest job would."""
    store.write(frame, table_path(str(warehouse), clinical(dataset)))


ALICE = Ids(nhs="9434765919", dob="1980-03-14", sex="2", postcode="LS1 4AB")


def test_linkage_reads_keys_and_hashes_only(spark: SparkSession, tmp_path: Path) -> None:
    """Clear identifiers beside the hashes are neither read from disk nor carried on."""
    store = open_store(spark)
    gp = clinical_rows(spark, [("A81001/1", "A81001", ALICE)], "s1")
    with_clear = gp.selectExpr("*", "'9434765919' AS NHS_NUMBER", "'1980-03-14' AS DOB")
    land(store, tmp_path, "gp_patients", with_clear)
    land(store, tmp_path, "hes_apc", clinical_rows(spark, [("E1", "RTH", ALICE)], "s2"))

    records = read_records(store, str(tmp_path))

    assert records.columns == ["source", *INPUT_COLUMNS]
    plan = records._jdf.queryExecution().executedPlan().toString()
    scans = re.findall(r"FileScan \w+ \[([^\]]*)\]", plan)
    assert len(scans) == 2
    for scan in scans:
        assert {column.split("#")[0] for column in scan.split(",")} == set(INPUT_COLUMNS)
    types = dict(records.dtypes)
    assert {types[c] for c in IDENTITY_COLUMNS} == {"binary", "array<binary>", "boolean"}
    assert sorted(r.source for r in records.collect()) == ["gp", "hes_apc"]


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
