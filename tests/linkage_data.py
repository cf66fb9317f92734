"""Hand-made linkage data shared by the linkage tests (stand-in hashes, named people).

`Ids` says what a record's identifiers are, `identity` turns them into the hash columns the
ingest job writes (sha256 stand-ins: linkage treats hashes as opaque bytes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from caredata_spark.storage import DeltaStore
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
BOB = Ids(nhs="4010232137", dob="1950-07-02", sex="1", postcode="LS2 7XY")
TWIN_1 = Ids(nhs="4505577104", dob="2010-05-20", sex="1", postcode="M1 1AE")
TWIN_2 = TWIN_1.but(nhs="4857773456")
NO_NHS_1 = Ids(dob="1990-06-07", sex="2", postcode="B1 1BB")  # GP persons without NHS number
NO_NHS_2 = Ids(dob="1990-06-07", sex="2", postcode="B1 1BB")
JAN1 = Ids(nhs="9876543210", dob="1975-01-01", sex="1", postcode="S1 2HE")

PERSONS = {
    "alice": [ALICE, ALICE.but(postcode="LS6 2QQ")],  # an old address from an earlier extract
    "bob": [BOB],
    "twin1": [TWIN_1],
    "twin2": [TWIN_2],
    "noid1": [NO_NHS_1],
    "noid2": [NO_NHS_2],
    "jan1": [JAN1],
}
