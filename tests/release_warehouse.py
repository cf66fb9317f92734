"""A small hand-made warehouse for release and subject access tests: one Delta write per table.

The clinical tables hold the columns releases read (record key, provider, the contract's
clinical fields, generalised attributes, a linkage hash); the vault is built by the same
functions as ingest's (`identity.vault_rows` over numbers hashed with the linkage key), so
subject access finds it exactly as it would find ingested data.

People (person ids are link map values; `None` = not linked):

    pA  GP A81001/1 (3 events), APC EPI1, OP OP1, AE AE1, and APC EPI7 linked by score
    pB  GP A81001/2 with a type 2 dissent in force; APC EPI2
    pC  GP A81001/3 (dissent 2023) then B82002/7 (withdrawn 2024 at the new practice)
    pD  GP A81001/4, dissent dated after the release date
    pE  hospital only: APC EPI5
    pF  APC EPI8: pA's NHS number keyed in error, another date of birth
    --  APC EPI9, unlinked
    pG  type 1 and type 2 dissent at GP A81001/8, so no GP row or link: hospital-only person
        of APC EPI10, found through the person index's NHS number
    pH  APC EPI11; type 2 dissent at GP A81001/9, whose link and index rows a type 1 purge
        erased: found through the record's own NHS number hash alone

Objection events and clinical records carry the linkage hash of their NHS number, as
ingest writes them; the person index holds (person_id, h_nhs), all a release reads of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, StringType

from caredata_spark.agreements import clinical_fields
from caredata_spark.config import KeySettings
from caredata_spark.contract import DATASETS
from caredata_spark.identifiers import clean_nhs_number
from caredata_spark.identity import vault_rows, with_nhs_hash
from caredata_spark.keyed_hash import KeyFrame, key_frame
from caredata_spark.keys import Role, generate_keys, key_path
from caredata_spark.storage import DeltaStore
from caredata_spark.submissions import LEDGER
from caredata_spark.tables import IDENTITY_VAULT, LINK_MAP, OBJECTIONS, PERSONS, SUBMISSIONS, clinical, table_path

RELEASE_DATE = dt.date(2025, 5, 1)
TYPE2_DISSENT, TYPE2_WITHDRAWN = "dissent", "withdrawn"


def nhs_number(first_nine: str) -> str:
    """A valid NHS number: the nine digits and their Modulus 11 check digit."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1)))
    check = 11 - total % 11
    assert check != 10, first_nine
    return first_nine + str(0 if check == 11 else check)


NHS_A, NHS_B, NHS_C, NHS_D, NHS_E, NHS_F, NHS_G, NHS_H = (
    "9434765919", nhs_number("401023213"), nhs_number("450557710"),
    nhs_number("612345678"), nhs_number("712345678"), nhs_number("812345675"),
    nhs_number("912345670"), nhs_number("512345670"),
)
DOB_A = dt.date(1980, 5, 4)


@dataclass(frozen=True)
class Record:
    dataset: str
    record_key: str
    person_id: str | None
    nhs: str | None
    dob: dt.date
    activity: dt.date
    diag: str = "E119"  # DIAG_01 of hospital records, SNOMED_CODE of GP events
    district: str = "LS1"


RECORDS = [
    Record("gp_patients", "A81001/1", "pA", NHS_A, DOB_A, dt.date(2010, 1, 1)),
    Record("gp_events", "A81001/1", "pA", NHS_A, DOB_A, dt.date(2024, 1, 5), "44054006"),
    Record("gp_events", "A81001/1", "pA", NHS_A, DOB_A, dt.date(2024, 3, 9), "38341003"),
    Record("gp_events", "A81001/1", "pA", NHS_A, DOB_A, dt.date(2024, 6, 2), "271649006"),
    Record("hes_apc", "EPI1", "pA", NHS_A, DOB_A, dt.date(2024, 2, 1), "I219"),
    Record("hes_op", "OP1", "pA", NHS_A, DOB_A, dt.date(2024, 4, 1), "R074"),
    Record("hes_ae", "AE1", "pA", NHS_A, DOB_A, dt.date(2024, 7, 3), "S720"),
    Record("hes_apc", "EPI7", "pA", None, DOB_A, dt.date(2024, 8, 8), "J189"),
    Record("gp_patients", "A81001/2", "pB", NHS_B, dt.date(1975, 2, 2), dt.date(2011, 1, 1)),
    Record("gp_events", "A81001/2", "pB", NHS_B, dt.date(1975, 2, 2), dt.date(2024, 1, 10), "881561000000100"),
    Record("hes_apc", "EPI2", "pB", NHS_B, dt.date(1975, 2, 2), dt.date(2024, 3, 3), "C509"),
    Record("gp_patients", "A81001/3", "pC", NHS_C, dt.date(1990, 9, 9), dt.date(2012, 1, 1)),
    Record("gp_patients", "B82002/7", "pC", NHS_C, dt.date(1990, 9, 9), dt.date(2023, 6, 1), district="M1"),
    Record("gp_events", "B82002/7", "pC", NHS_C, dt.date(1990, 9, 9), dt.date(2024, 2, 1), "881581000000109", "M1"),
    Record("gp_patients", "A81001/4", "pD", NHS_D, dt.date(1960, 1, 20), dt.date(2013, 1, 1)),
    Record("hes_apc", "EPI5", "pE", NHS_E, dt.date(2001, 12, 1), dt.date(2024, 5, 5), "K359"),
    Record("hes_apc", "EPI8", "pF", NHS_A, dt.date(1981, 5, 4), dt.date(2024, 5, 6), "S525"),
    Record("hes_apc", "EPI9", None, NHS_F, dt.date(1955, 3, 3), dt.date(2024, 6, 7), "N390"),
    Record("hes_apc", "EPI10", "pG", NHS_G, dt.date(1970, 7, 7), dt.date(2024, 4, 4), "I10"),
    Record("hes_apc", "EPI11", "pH", NHS_H, dt.date(1966, 6, 6), dt.date(2024, 4, 5), "I10"),
]
# type 2 codes (record_key, NHS number, status, event date)
OBJECTION_EVENTS = [
    ("A81001/2", NHS_B, TYPE2_DISSENT, dt.date(2024, 1, 10)),
    ("A81001/3", NHS_C, TYPE2_DISSENT, dt.date(2023, 1, 1)),
    ("B82002/7", NHS_C, TYPE2_WITHDRAWN, dt.date(2024, 2, 1)),
    ("A81001/4", NHS_D, TYPE2_DISSENT, dt.date(2025, 6, 1)),
    ("A81001/8", NHS_G, TYPE2_DISSENT, dt.date(2024, 1, 15)),
    ("A81001/9", NHS_H, TYPE2_DISSENT, dt.date(2024, 1, 16)),
]
OBJECTORS = {"pB", "pG", "pH"}  # on RELEASE_DATE
INDEXED = {"pA": NHS_A, "pB": NHS_B, "pC": NHS_C, "pD": NHS_D, "pE": NHS_E, "pG": NHS_G}  # pH's rows erased
UNLINKED = {"EPI9"}
EARLIER = "sub-zz-earlier"  # an earlier run's file of EPI2, its id sorting after the later one's


def keys_of(directory: Path) -> KeySettings:
    generate_keys(directory)
    return KeySettings(
        directory=str(directory), linkage_env="NO_SUCH_ENV_1", vault_env="NO_SUCH_ENV_2",
        pseudonym_env="NO_SUCH_ENV_3", transport_env="NO_SUCH_ENV_4",
    )


def _age(dob: dt.date, on: dt.date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def _clinical_frame(spark: SparkSession, name: str, records: list[Record], linkage: KeyFrame) -> DataFrame:
    dataset = DATASETS[name]
    fields = clinical_fields(dataset)
    typed = {
        **{c: DateType() for c in dataset.dates},
        **{c: DoubleType() for c in dataset.numeric},
    }

    def value(r: Record, column: str) -> object:
        if column == dataset.activity_date:
            return r.activity
        if column in ("DIAG_01", "SNOMED_CODE"):
            return r.diag
        if column in typed:
            return 7.5 if column == "VALUE" else None
        return f"{column.lower()}-{r.record_key}"  # a value traceable to its column

    rows = [
        (f"sub-{name}", r.record_key, "RTH" if name.startswith("hes") else r.record_key.split("/")[0],
         *[value(r, c) for c in fields], _age(r.dob, r.activity), "1", r.district, r.district[:-1], r.nhs)
        for r in records
    ]
    schema = ", ".join(
        ["submission_id string", "record_key string", "provider string"]
        + [f"{c} {typed.get(c, StringType()).simpleString()}" for c in fields]
        + ["age int", "sex string", "district string", "area string", "nhs_number string"]
    )
    return spark.createDataFrame(rows, schema).transform(nhs_hashed(linkage))


def nhs_hashed(linkage: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """`nhs_number` -> `h_nhs`, the linkage hash ingest gives it."""
    return lambda df: (
        df.withColumn("nhs_number", clean_nhs_number(F.col("nhs_number")))
        .transform(with_nhs_hash(linkage))
        .drop("nhs_number")
    )


def build_warehouse(
    spark: SparkSession, store: DeltaStore, warehouse: Path, keys: KeySettings, datasets: tuple[str, ...] = tuple(DATASETS)
) -> None:
    """The clinical tables of `datasets` (all by default), link map, person index,
    objections, vault and submissions ledger (EPI2 also has an earlier file's identity)."""
    root = str(warehouse)
    linkage = key_frame(spark, str(key_path(keys, Role.LINKAGE)), Role.LINKAGE)
    for name in datasets:
        records = [r for r in RECORDS if r.dataset == name]
        store.write(_clinical_frame(spark, name, records, linkage), table_path(root, clinical(name)))
    links = {(DATASETS[r.dataset].source, r.record_key): r.person_id for r in RECORDS}
    store.write(
        spark.createDataFrame(
            [(s, k, p, "test" if p else None, None, 1) for (s, k), p in sorted(links.items())],
            "source string, record_key string, person_id string, match_step string, match_weight double, run int",
        ),
        table_path(root, LINK_MAP),
    )
    store.write(
        spark.createDataFrame(
            [(k, 2, status, day, "sub-gp_events", 1, nhs) for k, nhs, status, day in OBJECTION_EVENTS],
            "record_key string, objection_type int, status string, event_date date, submission_id string, "
            "run_id long, nhs_number string",
        ).transform(nhs_hashed(linkage)),
        table_path(root, OBJECTIONS),
    )
    store.write(
        spark.createDataFrame(sorted(INDEXED.items()), "person_id string, nhs_number string").transform(
            nhs_hashed(linkage)
        ),
        table_path(root, PERSONS),
    )
    vault_key = key_frame(spark, str(key_path(keys, Role.VAULT)), Role.VAULT)
    earlier = [("hes_apc", "EPI2", EARLIER, NHS_F, dt.date(1975, 2, 2), "1", "LS1 4AB")]  # superseded
    identities = spark.createDataFrame(
        [(DATASETS[r.dataset].source, r.record_key, f"sub-{r.dataset}", r.nhs, r.dob, "1", f"{r.district} 4AB")
         for r in RECORDS] + earlier,
        "source string, record_key string, submission_id string, nhs_number string, dob date, sex string, postcode string",
    ).withColumn("nhs_number", clean_nhs_number(F.col("nhs_number")))
    hashed = identities.transform(with_nhs_hash(linkage))
    vault = None
    for source in sorted({DATASETS[r.dataset].source for r in RECORDS}):
        part = hashed.filter(F.col("source") == source).transform(vault_rows(source, vault_key))
        vault = part if vault is None else vault.unionByName(part)
    assert vault is not None
    store.write(vault.dropDuplicates(["source", "record_key", "submission_id"]), table_path(root, IDENTITY_VAULT))
    ledger = [(EARLIER, "hes_apc", 1)] + [(f"sub-{name}", name, 2) for name in DATASETS]
    store.write(
        spark.createDataFrame(
            [(sub, name, "RTH", f"{sub}.csv", "csv", 1, run, "ingested", None, 1, 1, 0, 0, None)
             for sub, name, run in ledger],
            LEDGER,
        ),
        table_path(root, SUBMISSIONS),
    )
