"""HMAC-SHA256 in Spark built-ins, with the key entering the plan only as data.

Spark before 4.3 has no HMAC function (4.3's `hmac` looks a `Mac` up and keys it per row:
slower than two `sha2`, see docs/performance.md), and a key passed as a literal is printed
by explain(), stored in the event log and shown in the UI. Here the key file is read by
the `binaryFile` source (the plan shows only its path), the HMAC pads are derived from it
by Spark expressions on that one row, and the row is broadcast and cross-joined onto the
data:

    HMAC(K, m) = SHA256((K || 0^32) XOR opad || SHA256((K || 0^32) XOR ipad || m))

Each row then costs two `sha2` calls; the pads are computed once per query. Keys are the
32-byte keys of `caredata_spark.keys`; the file is checked to be exactly one 32-byte
file, so a wrong path fails loudly instead of multiplying rows or hashing with garbage.

Columns named `__caredata_key*` are reserved for the key row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

from caredata_spark.keys import KEY_BYTES, KeyMaterialError, Role, check_key_file

SHA256_BLOCK = 64
IPAD_BYTE = 0x36
OPAD_BYTE = 0x5C
_KEY = "__caredata_key"
_IPAD = "__caredata_key_ipad"
_OPAD = "__caredata_key_opad"
_GLOB = re.compile(r"[*?\[\]{}\\]")
_BAD_KEY_ROW = f"key file must be exactly one file of {KEY_BYTES} bytes"


@dataclass(frozen=True)
class KeyFrame:
    """One row of key material (raw key and HMAC pads), computed by Spark from a key file.

    `key`, `ipad` and `opad` are usable inside `with_key_material`, e.g. the vault's
    `F.aes_encrypt(value, key.key, F.lit("GCM"))`, so no key ever becomes a literal.
    """

    df: DataFrame

    @property
    def key(self) -> Column:
        return F.col(_KEY)

    @property
    def ipad(self) -> Column:
        return F.col(_IPAD)

    @property
    def opad(self) -> Column:
        return F.col(_OPAD)


def _xor_block(key: Column, byte: int) -> Column:
    """The key, zero-padded to the SHA-256 block, XOR a repeated byte, as Spark computes it.

    Spark has no binary XOR, so each of the 64 bytes goes through its hex form as an int.
    """
    hexed = F.hex(F.concat(key, F.lit(bytes(SHA256_BLOCK - KEY_BYTES))))

    def xored_byte(i: Column) -> Column:
        value = F.conv(F.substring(hexed, i * 2 + 1, F.lit(2)), 16, 10).cast("int")
        return F.lpad(F.hex(value.bitwiseXOR(F.lit(byte))), 2, "0")

    positions = F.sequence(F.lit(0), F.lit(SHA256_BLOCK - 1))
    return F.unhex(F.array_join(F.transform(positions, xored_byte), ""))


def _hmac(ipad: Column, opad: Column, message: Column) -> Column:
    inner = F.unhex(F.sha2(F.concat(ipad, message), 256))
    return F.unhex(F.sha2(F.concat(opad, inner), 256))


def _hmac_with_key(key: Column, message: Column) -> Column:
    """HMAC with pads computed inline: for one-row key derivations, not per data row."""
    return _hmac(_xor_block(key, IPAD_BYTE), _xor_block(key, OPAD_BYTE), message)


def _prepared(raw_key: DataFrame) -> KeyFrame:
    key = F.col(_KEY)
    return KeyFrame(
        raw_key.select(
            key, _xor_block(key, IPAD_BYTE).alias(_IPAD), _xor_block(key, OPAD_BYTE).alias(_OPAD)
        )
    )


def _checked_key() -> Column:
    """The `content` of a binaryFile scan as an aggregate: one row, or the query fails.

    An aggregate yields exactly one row even when the path matched no file or several, so
    a wrong path can neither multiply the data's rows nor hash with the wrong bytes.
    """
    content = F.any_value("content")
    one_key = (F.count(F.lit(1)) == 1) & (F.length(content) == KEY_BYTES)
    return F.when(one_key, content).otherwise(F.raise_error(F.lit(_BAD_KEY_ROW)))


def _read_key(spark: SparkSession, key_file: str, role: Role) -> DataFrame:
    if _GLOB.search(key_file):
        raise KeyMaterialError(f"{role.value} key: path {key_file} contains glob characters")
    location = urlparse(key_file)
    if location.scheme in ("", "file"):
        check_key_file(Path(location.path), role)
    return spark.read.format("binaryFile").load(key_file).agg(_checked_key().alias(_KEY))


def key_frame(spark: SparkSession, key_file: str, role: Role = Role.LINKAGE) -> KeyFrame:
    """Key material of a 32-byte key file (`keys.key_file` gives one for any role)."""
    return _prepared(_read_key(spark, key_file, role))


def derived_key_frame(spark: SparkSession, master_key_file: str, info: str) -> KeyFrame:
    """HKDF-SHA256(master, salt=none, info) -> 32 bytes, computed by Spark (RFC 5869).

    One key per data-sharing agreement (`info` names it), so pseudonyms released under two
    agreements cannot be joined; `info` is not secret and may appear in plans.
    """
    master = _read_key(spark, master_key_file, Role.PSEUDONYM)
    prk = _hmac_with_key(F.lit(bytes(KEY_BYTES)), F.col(_KEY))  # extract, zero salt
    okm = _hmac_with_key(prk, F.lit(info.encode("utf-8") + b"\x01"))  # expand, first block
    return _prepared(master.select(okm.alias(_KEY)))


def with_key_material(
    key: KeyFrame, columns: Mapping[str, Column]
) -> Callable[[DataFrame], DataFrame]:
    """Add (or replace) `columns`, which may use `key.key/ipad/opad`; key columns are dropped.

    The key row is broadcast: one row of 160 bytes, so every executor holds it once and
    the data is never shuffled.
    """

    def transform(df: DataFrame) -> DataFrame:
        return (
            df.join(F.broadcast(key.df), how="cross")
            .withColumns(dict(columns))
            .drop(_KEY, _IPAD, _OPAD)
        )

    return transform


def _message(df: DataFrame, name: str, value: Column) -> Column:
    """`<name>:` then the value's bytes: binary as is, anything else as its UTF-8 string."""
    is_binary = isinstance(df.select(value).schema.fields[0].dataType, BinaryType)
    value_bytes = value if is_binary else value.cast("string").cast("binary")
    return F.concat(F.lit(f"{name}:".encode("utf-8")), value_bytes)


def keyed_hashes(
    key: KeyFrame, columns: Mapping[str, Column], bits: int = 128
) -> Callable[[DataFrame], DataFrame]:
    """Add a binary column per entry: HMAC-SHA256(key, "<name>:" + value)[:bits/8].

    The name is hashed with the value, so equal values in different columns hash apart;
    give values that must match across sources the same name (e.g. `nhs_number` for GP
    `NHS_NUMBER` and HES `NEWNHSNO`). A null value gives a null hash. An entry may reuse
    the name of the column it hashes, replacing the identifier by its hash.
    """
    if bits % 8 or not 8 <= bits <= 256:
        raise ValueError(f"bits must be a multiple of 8 between 8 and 256, got {bits}")
    length = bits // 8

    def transform(df: DataFrame) -> DataFrame:
        hashes = {
            name: F.substring(_hmac(key.ipad, key.opad, _message(df, name, value)), 1, length)
            for name, value in columns.items()
        }
        return df.transform(with_key_material(key, hashes))

    return transform
