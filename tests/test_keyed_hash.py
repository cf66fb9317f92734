"""HMAC-SHA256 in Spark: exact bytes against Python's hmac, and no key in plans or logs."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
from pathlib import Path

import pytest
from chispa import assert_df_equality
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, DateType, StringType, StructField, StructType
from leaks import plan_text, secrets_of

from caredata_spark import keyed_hash
from caredata_spark.config import KeySettings
from caredata_spark.keyed_hash import (
    KeyFrame,
    derived_key_frame,
    key_frame,
    keyed_hashes,
    with_key_material,
)
from caredata_spark.keys import KEY_BYTES, KeyMaterialError, Role, key_file

SCHEMA = StructType(
    [
        StructField("record_key", StringType()),
        StructField("nhs_number", StringType()),
        StructField("dob", DateType()),
        StructField("raw", BinaryType()),
    ]
)
ROWS = [
    ("A81001/1", "9434765919", datetime.date(1970, 1, 31), b"\x00\xff"),
    ("A81001/2", None, None, None),
    ("RTH/77", "é 漢字", datetime.date(2001, 12, 1), b""),
]


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return os.urandom(KEY_BYTES)


@pytest.fixture
def key_path(tmp_path: Path, key: bytes) -> str:
    path = tmp_path / "linkage.key"
    path.write_bytes(key)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def records(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(ROWS, SCHEMA)


def expected_hmac(key: bytes, name: str, value: bytes | None, length: int = 16) -> bytes | None:
    if value is None:
        return None
    return hmac.new(key, name.encode() + b":" + value, hashlib.sha256).digest()[:length]


def test_matches_python_hmac_exactly(
    spark: SparkSession, records: DataFrame, key: bytes, key_path: str
) -> None:
    hashed = records.transform(
        keyed_hashes(
            key_frame(spark, key_path),
            {
                "nhs_number_hash": F.col("nhs_number"),
                "dob_hash": F.col("dob"),
                "raw_hash": F.col("raw"),
            },
        )
    )
    expected = spark.createDataFrame(
        [
            (
                *row,
                expected_hmac(key, "nhs_number_hash", row[1] and row[1].encode()),
                expected_hmac(key, "dob_hash", row[2] and row[2].isoformat().encode()),
                expected_hmac(key, "raw_hash", row[3]),
            )
            for row in ROWS
        ],
        StructType(
            [*SCHEMA.fields]
            + [StructField(n, BinaryType()) for n in ("nhs_number_hash", "dob_hash", "raw_hash")]
        ),
    )
    assert_df_equality(hashed, expected, ignore_row_order=True)


def test_null_value_gives_null_hash_and_empty_value_does_not(
    spark: SparkSession, records: DataFrame, key_path: str
) -> None:
    hashed = records.transform(keyed_hashes(key_frame(spark, key_path), {"h": F.col("raw")}))
    by_key = {r.record_key: r.h for r in hashed.collect()}
    assert by_key["A81001/2"] is None
    assert by_key["RTH/77"] is not None and len(by_key["RTH/77"]) == 16


def test_same_value_in_two_columns_hashes_apart(
    spark: SparkSession, key: bytes, key_path: str
) -> None:
    df = spark.createDataFrame([("9434765919", "9434765919")], "gp string, hes string")
    row = df.transform(
        keyed_hashes(key_frame(spark, key_path), {"a": F.col("gp"), "b": F.col("hes")})
    ).first()
    assert row is not None and row.a != row.b
    assert row.a == expected_hmac(key, "a", b"9434765919")


@pytest.mark.parametrize("bits", [64, 256])
def test_truncation_to_bits(spark: SparkSession, key: bytes, key_path: str, bits: int) -> None:
    df = spark.createDataFrame([("x",)], "v string")
    row = df.transform(keyed_hashes(key_frame(spark, key_path), {"h": F.col("v")}, bits)).first()
    assert row is not None and row.h == expected_hmac(key, "h", b"x", bits // 8)


@pytest.mark.parametrize("bits", [0, 100, 264])
def test_bad_bits_refused(spark: SparkSession, key_path: str, bits: int) -> None:
    with pytest.raises(ValueError, match="multiple of 8 between 8 and 256"):
        keyed_hashes(key_frame(spark, key_path), {"h": F.col("v")}, bits)


def test_hash_may_replace_the_identifier(
    spark: SparkSession, records: DataFrame, key: bytes, key_path: str
) -> None:
    hashed = records.transform(
        keyed_hashes(key_frame(spark, key_path), {"nhs_number": F.col("nhs_number")})
    )
    assert hashed.columns == records.columns
    assert dict(hashed.dtypes)["nhs_number"] == "binary"
    first = hashed.where(F.col("record_key") == "A81001/1").first()
    assert first is not None
    assert first.nhs_number == expected_hmac(key, "nhs_number", b"9434765919")


def test_key_columns_never_survive(
    spark: SparkSession, records: DataFrame, key_path: str
) -> None:
    hashed = records.transform(keyed_hashes(key_frame(spark, key_path), {"h": F.col("nhs_number")}))
    assert hashed.columns == [*records.columns, "h"]
    assert hashed.count() == len(ROWS)  # the one-row key frame multiplies nothing


def test_key_material_usable_by_other_spark_functions(
    spark: SparkSession, key: bytes, key_path: str
) -> None:
    """The vault's use: AES-GCM in Spark with the key as data, decryptable in Python."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    frame = key_frame(spark, key_path, Role.VAULT)
    df = spark.createDataFrame([("9434765919",)], "v string")
    sealed = df.transform(
        with_key_material(frame, {"v": F.aes_encrypt(F.col("v"), frame.key, F.lit("GCM"))})
    )
    assert sealed.columns == ["v"]
    row = sealed.first()
    assert row is not None
    blob = bytes(row.v)
    assert AESGCM(key).decrypt(blob[:12], blob[12:], None) == b"9434765919"
    assert not any(s in plan_text(sealed) for s in secrets_of(key))


def test_derived_key_is_hkdf_sha256(spark: SparkSession, key: bytes, key_path: str) -> None:
    info = "agreement:DARS-NIC-000001"
    expected_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()
    ).derive(key)
    frame = derived_key_frame(spark, key_path, info)
    df = spark.createDataFrame([("9434765919",)], "v string")
    hashed = df.transform(keyed_hashes(frame, {"pseudonym": F.col("v")}))
    row = hashed.first()
    assert row is not None
    assert row.pseudonym == expected_hmac(expected_key, "pseudonym", b"9434765919")
    other = derived_key_frame(spark, key_path, "agreement:DARS-NIC-000002")
    other_row = df.transform(keyed_hashes(other, {"pseudonym": F.col("v")})).first()
    assert other_row is not None and other_row.pseudonym != row.pseudonym
    leaks = secrets_of(key) + secrets_of(expected_key)
    assert not any(s in plan_text(hashed) for s in leaks)


def test_no_key_material_in_the_plan(
    spark: SparkSession, records: DataFrame, key: bytes, key_path: str
) -> None:
    hashed = records.transform(keyed_hashes(key_frame(spark, key_path), {"h": F.col("nhs_number")}))
    hashed.collect()  # the executed (adaptive) plan is the one that would hold constants
    text = plan_text(hashed)
    assert "linkage.key" in text  # the plan names the file...
    assert not any(s in text for s in secrets_of(key))  # ...never its content
    # control: the same check does catch a key passed the naive way, as a literal
    naive = records.select(F.sha2(F.concat(F.lit(key), F.col("raw")), 256))
    assert any(s in plan_text(naive) for s in secrets_of(key))


def test_no_key_material_in_the_event_log(
    spark: SparkSession, key: bytes, key_path: str, tmp_path: Path, event_log: Path
) -> None:
    df = spark.createDataFrame([("9434765919",)], "v string")
    hashed = df.transform(keyed_hashes(key_frame(spark, key_path), {"h": F.col("v")}))
    hashed.collect()
    control = os.urandom(KEY_BYTES)  # a key passed the naive way, as a literal
    df.select(F.sha2(F.concat(F.lit(control), F.col("v").cast("binary")), 256)).collect()
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()  # type: ignore[union-attr]
    logged = "".join(
        p.read_text(encoding="latin-1") for p in event_log.rglob("*") if p.is_file()
    )
    assert "SparkListenerSQLExecutionStart" in logged and "linkage.key" in logged
    assert any(s in logged for s in secrets_of(control))  # the log does record literals
    assert not any(s in logged for s in secrets_of(key))


def test_key_from_environment_through_a_temporary_file(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(KEY_BYTES)
    monkeypatch.setenv("CAREDATA_TEST_LINKAGE_KEY", base64.b64encode(key).decode())
    settings = KeySettings(directory=str(tmp_path), linkage_env="CAREDATA_TEST_LINKAGE_KEY")
    df = spark.createDataFrame([("x",)], "v string")
    with key_file(settings, Role.LINKAGE) as path:
        row = df.transform(keyed_hashes(key_frame(spark, str(path)), {"h": F.col("v")})).first()
    assert row is not None and row.h == expected_hmac(key, "h", b"x")


def test_key_file_checks(spark: SparkSession, tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(16))
    short.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="holds 16 bytes, expected 32"):
        key_frame(spark, str(short))
    with pytest.raises(KeyMaterialError, match="is not a regular file"):
        key_frame(spark, str(tmp_path))
    with pytest.raises(KeyMaterialError, match="glob characters"):
        key_frame(spark, str(tmp_path / "*.key"))


@pytest.mark.parametrize("sizes", [[KEY_BYTES, KEY_BYTES], [16], []])
def test_spark_refuses_a_key_row_it_cannot_trust(
    spark: SparkSession, tmp_path: Path, sizes: list[int]
) -> None:
    """Paths the driver cannot check (remote stores) are checked by the query itself."""
    for i, size in enumerate(sizes):
        (tmp_path / f"{i}.key").write_bytes(os.urandom(size))
    raw = spark.read.format("binaryFile").load(str(tmp_path))
    with pytest.raises(Exception, match="key file must be exactly one file of 32 bytes"):
        raw.agg(keyed_hash._checked_key().alias("k")).collect()


def test_key_frame_is_one_row(spark: SparkSession, key_path: str) -> None:
    frame = key_frame(spark, key_path)
    assert isinstance(frame, KeyFrame)
    assert frame.df.count() == 1
