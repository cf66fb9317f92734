"""Keyed hashing against plain sha2, and the envelope's encryption/decryption throughput.

`keyed_hashes` and `F.sha2` hash the same cached frame in the same run, so their ratio is
the cost of the HMAC (two sha2 calls per row and the broadcast key row) on this machine.
The envelope figures stream a file of random bytes through `encrypt_file`,
`decrypt_stream` and `decrypted_file`, and record the peak Python allocation while
decrypting, which stays a few chunks whatever the file size.

    python -m bench.bench_envelope --rows 5000000 --megabytes 256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.envelope import decrypt_stream, decrypted_file, encrypt_file
from caredata_spark.keyed_hash import key_frame, keyed_hashes
from caredata_spark.keys import KEY_BYTES, TransportPrivateKey

MIB = 1 << 20


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _noop_write(df: DataFrame) -> None:
    """Evaluate every column of every row without the cost of storing them."""
    df.write.format("noop").mode("overwrite").save()


def keyed_hash_figures(spark: SparkSession, rows: int, workdir: Path) -> dict[str, Any]:
    key_path = workdir / "linkage.key"
    key_path.write_bytes(os.urandom(KEY_BYTES))
    key_path.chmod(0o600)
    numbers = spark.range(rows).select(
        F.lpad(F.col("id").cast("string"), 10, "0").alias("nhs_number")
    ).cache()
    numbers.count()
    try:
        plain = _seconds(lambda: _noop_write(numbers.select(F.sha2("nhs_number", 256))))
        keyed = _seconds(
            lambda: _noop_write(
                numbers.transform(
                    keyed_hashes(key_frame(spark, str(key_path)), {"h": F.col("nhs_number")})
                )
            )
        )
    finally:
        numbers.unpersist()
    return {
        "keyed_hash.rows": rows,
        "keyed_hash.sha2_rows_per_s": round(rows / plain),
        "keyed_hash.hmac_rows_per_s": round(rows / keyed),
        "keyed_hash.hmac_over_sha2_time": round(keyed / plain, 2),
    }


def envelope_figures(megabytes: int, workdir: Path) -> dict[str, Any]:
    key = TransportPrivateKey.from_seed(os.urandom(KEY_BYTES))
    plain, sealed = workdir / "submission.csv", workdir / "submission.csv.enc"
    with plain.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(MIB))

    def decrypt() -> None:
        for _ in decrypt_stream(sealed, key):
            pass

    def to_scratch() -> None:
        with decrypted_file(sealed, key, workdir):
            pass

    encrypt = _seconds(lambda: encrypt_file(plain, sealed, key.public_key()))
    stream = _seconds(decrypt)
    scratch = _seconds(to_scratch)
    tracemalloc.start()
    decrypt()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "envelope.megabytes": megabytes,
        "envelope.encrypt_mb_per_s": round(megabytes / encrypt),
        "envelope.decrypt_stream_mb_per_s": round(megabytes / stream),
        "envelope.decrypt_to_scratch_mb_per_s": round(megabytes / scratch),
        "envelope.decrypt_peak_python_mib": round(peak / MIB, 1),
    }


def run(spark: SparkSession, rows: int = 5_000_000, megabytes: int = 256) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caredata-bench-") as workdir:
        return {
            **keyed_hash_figures(spark, rows, Path(workdir)),
            **envelope_figures(megabytes, Path(workdir)),
        }


def main() -> None:
    from caredata_spark.config import SparkSettings
    from caredata_spark.session import build_session

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--megabytes", type=int, default=256)
    args = parser.parse_args()
    spark = build_session(SparkSettings(app_name="caredata-bench-envelope"))
    for name, value in run(spark, args.rows, args.megabytes).items():
        print(f"{name:<40} {value}")


if __name__ == "__main__":
    main()
