"""What linkage reads: record keys and keyed identifier hashes, never an identifier.

The clinical tables also carry clinical fields; linkage selects `INPUT_COLUMNS` only, so its
plans, shuffles and tables hold 16-byte HMACs (under the linkage key) and booleans. The
identity vault is never opened.

Records whose hashes are all equal link identically, so linkage runs on distinct identity
*signatures*: a person's hospital records mostly repeat the same identifiers, which makes
the data joined several times smaller than the data read.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.errors import UsageError
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import clinical, table_path

GP = "gp"
# clinical dataset -> `source` value of the link map (contract section 3)
SOURCES = {"gp_patients": GP, "hes_apc": "hes_apc", "hes_op": "hes_op", "hes_ae": "hes_ae"}

IDENTITY_COLUMNS = (
    "h_nhs",
    "h_nhs_del",
    "h_sex",
    "h_dob",
    "h_dob_swap",
    "h_dob_ym",
    "h_dob_yd",
    "h_dob_md",
    "dob_jan1",
    "h_postcode",
    "h_district",
    "communal",
)
DOB_PARTS = ("h_dob_swap", "h_dob_ym", "h_dob_yd", "h_dob_md")  # meaningless without h_dob
KEY_COLUMNS = ("record_key", "provider", "submission_id")
INPUT_COLUMNS = (*KEY_COLUMNS, *IDENTITY_COLUMNS)
SIGNATURE_BYTES = 16  # 128 bits: no collision among billions of signatures


def read_records(
    store: DeltaStore, warehouse: str, since: Mapping[str, int]
) -> tuple[DataFrame, dict[str, int]]:
    """Rows of every clinical table that exists, as `source` + INPUT_COLUMNS, and the version
    of each table read, by source.

    Only files added after a source's version in `since` (the version an earlier run read)
    are read, so a monthly run reads about a month of files rather than the tables' history;
    a table whose source is not in `since` is read whole. Rewritten files bring back old
    rows too, which the caller drops by submission.
    """
    frames, versions = [], {}
    for dataset, source in SOURCES.items():
        path = table_path(warehouse, clinical(dataset))
        version = store.version(path)
        if version is None:
            continue
        versions[source] = version
        rows = store.read_added(path, since.get(source), version)
        frames.append(rows.select(F.lit(source).alias("source"), *[_as_linked(c) for c in INPUT_COLUMNS]))
    if not frames:
        raise UsageError(
            f"no clinical tables under {warehouse}: run `caredata ingest` before `caredata link`"
        )
    return reduce(DataFrame.unionByName, frames), versions


def _as_linked(column: str) -> Column:
    """A column as linkage compares it: a DOB part only beside a DOB. Ingest once hashed ''
    as `h_dob_yd` of every record without a DOB, so two missing DOBs agreed partially (steps
    3/4, the scored step's blocking); tables ingested before the fix still hold that hash."""
    if column in DOB_PARTS:
        return F.when(F.col("h_dob").isNotNull(), F.col(column)).alias(column)
    return F.col(column)


def signature() -> Column:
    """128-bit digest of all identity hashes (nulls included), the key records link by."""
    identity = F.to_json(F.struct(*IDENTITY_COLUMNS))
    return F.substring(F.unhex(F.sha2(identity, 256)), 1, SIGNATURE_BYTES)


def with_signature(records: DataFrame) -> DataFrame:
    return records.withColumn("signature", signature())


def identities(records: DataFrame) -> DataFrame:
    """One row per distinct signature: what the matching steps compare.

    A signature is a digest of exactly these columns, so whole-row `distinct` keeps the same
    rows as de-duplicating on the signature, and is a hash aggregation. `dropDuplicates` on
    the signature alone keeps the other columns with `first`, which Spark can only run as
    a sort-based aggregation: every hospital row sorted twice.
    """
    return records.select("signature", *IDENTITY_COLUMNS).distinct()
