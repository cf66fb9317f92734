"""Separating identity from clinical data at ingest.

Clinical tables keep record keys, keyed linkage hashes (HMAC under the linkage key) and
generalised attributes (age, sex code, postcode district); the identifiers themselves go to
the identity vault, each encrypted with AES-256-GCM under the vault key. Neither key is
ever a literal in a Spark plan: both are read from key files as data (`keyed_hash`).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.identifiers import outward_code
from caredata_spark.keyed_hash import KeyFrame, keyed_hashes, with_key_material

NHS_DIGITS = 10
LINKAGE_HASHES = (
    "h_nhs", *[f"h_nhs_del_{i}" for i in range(NHS_DIGITS)], "h_sex", "h_dob", "h_dob_swap",
    "h_dob_ym", "h_dob_yd", "h_dob_md", "h_postcode", "h_district",
)
IDENTITY_FIELDS = ("nhs_number", "dob", "sex", "postcode")
IDENTITY_SCHEMA = "nhs_number string, dob string, sex string, postcode string"
VAULT_COLUMNS = ("source", "record_key", "submission_id", "h_nhs", "enc_identity")


def _linkable_postcode() -> Column:
    return F.when(~F.col("pseudo_postcode"), F.col("postcode"))


def _district() -> Column:
    """Outward code of the linkable postcode, which validation left normalised: no second
    shape check (`postcode_district`, for raw values, costs two regular expressions a row)."""
    return outward_code(_linkable_postcode())


def linkage_messages() -> dict[str, Column]:
    """What each linkage hash is computed from (null in, null hash out)."""
    nhs = F.col("nhs_number")
    digits = F.col("nhs_digits")  # valid, or 10 digits failing only the check digit
    dob = F.col("dob")
    day, month, year = F.dayofmonth(dob), F.month(dob), F.year(dob)
    swappable = (day <= 12) & (day != month)
    messages = {
        "h_nhs": nhs,
        **{
            f"h_nhs_del_{i}": F.concat(F.substring(digits, 1, i), F.substring(digits, i + 2, NHS_DIGITS))
            for i in range(NHS_DIGITS)
        },
        "h_sex": F.when(F.col("sex").isin("1", "2"), F.col("sex")),
        "h_dob": F.date_format(dob, "yyyy-MM-dd"),
        "h_dob_swap": F.when(swappable, F.date_format(F.make_date(year, day, month), "yyyy-MM-dd")),
        "h_dob_ym": F.date_format(dob, "yyyy-MM"),
        # concat_ws skips nulls: without the `when`, every missing DOB hashed '' and agreed
        "h_dob_yd": F.when(
            dob.isNotNull(), F.concat_ws("-", year.cast("string"), F.lpad(day.cast("string"), 2, "0"))
        ),
        "h_dob_md": F.date_format(dob, "MM-dd"),
        "h_postcode": _linkable_postcode(),
        "h_district": _district(),
    }
    return messages


def with_nhs_hash(linkage_key: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """Add `h_nhs` alone, exactly as `with_linkage_hashes` computes it: what objections,
    subject access requests and release lookups match records by."""
    return keyed_hashes(linkage_key, {"h_nhs": linkage_messages()["h_nhs"]})


def with_linkage_hashes(linkage_key: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """Add the linkage hashes `linkage/` joins on, and the flags its rules consult."""

    def transform(df: DataFrame) -> DataFrame:
        dob = F.col("dob")
        return (
            df.transform(keyed_hashes(linkage_key, linkage_messages()))
            .withColumn(
                "h_nhs_del",
                F.when(F.col("nhs_digits").isNotNull(), F.array(*[f"h_nhs_del_{i}" for i in range(NHS_DIGITS)])),
            )
            .drop(*[f"h_nhs_del_{i}" for i in range(NHS_DIGITS)])
            .withColumn("dob_jan1", (F.month(dob) == 1) & (F.dayofmonth(dob) == 1))
            .withColumn("communal", F.lit(False))
        )

    return transform


def generalised() -> Callable[[DataFrame], DataFrame]:
    """Attributes analysts need without identifying anyone: age at activity, district, area."""

    def transform(df: DataFrame) -> DataFrame:
        district = _district()
        age = F.floor(F.months_between(F.col("activity_date"), F.col("dob")) / 12).cast("int")
        return (
            df.withColumn("age", F.when(age >= 0, age))
            .withColumn("district", district)
            .withColumn("area", F.regexp_extract(district, "^([A-Z]{1,2})", 1))
        )

    return transform


def _encrypted(value: Column, key: KeyFrame) -> Column:
    return F.aes_encrypt(value.cast("binary"), key.key, F.lit("GCM"))


def vault_rows(source: str, vault_key: KeyFrame) -> Callable[[DataFrame], DataFrame]:
    """One vault row per record: the four identifiers as one JSON document, encrypted once
    (AES-256-GCM, random IV: one cipher call per record, not per identifier), plus h_nhs
    so subject access can find a patient's records without decrypting the vault."""

    def transform(df: DataFrame) -> DataFrame:
        identity = F.to_json(
            F.struct(
                F.col("nhs_number"),
                F.date_format("dob", "yyyy-MM-dd").alias("dob"),
                F.col("sex"),
                F.col("postcode"),
            )
        )
        return (
            df.select("record_key", "submission_id", "h_nhs", "nhs_number", "dob", "sex", "postcode")
            .withColumn("source", F.lit(source))
            .transform(with_key_material(vault_key, {"enc_identity": _encrypted(identity, vault_key)}))
            .select(*VAULT_COLUMNS)
        )

    return transform


def identity_in_clear(vault_key: KeyFrame) -> Column:
    """A vault row's identifiers in clear (struct of IDENTITY_SCHEMA; DOB as YYYY-MM-DD), for
    red releases and subject access only. Use inside `with_key_material(vault_key, ...)`."""
    clear = F.aes_decrypt(F.col("enc_identity"), vault_key.key, F.lit("GCM")).cast("string")
    return F.from_json(clear, IDENTITY_SCHEMA)
