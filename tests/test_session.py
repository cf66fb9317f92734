"""The session's own guarantees: nothing in clear on its scratch disks, and a JVM set up for it."""

from __future__ import annotations

from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark.session import JIT_HUGE_METHODS, with_java_option

MARKER = "9434765919-LS1-4AB-identifier"


def _scratch_files(spark: SparkSession) -> list[Path]:
    """Every file under the session's scratch root (conftest gives the tests their own)."""
    root = Path(spark.sparkContext.getConf().get("spark.local.dir"))
    return [f for f in root.rglob("*") if f.is_file()]


def _contents(files: list[Path]) -> bytes:
    """The files' bytes; one Spark's cleaner deleted since it was listed (another query's
    shuffle output, an earlier test's) is skipped: a race, not a failure (it failed a
    fresh-clone run on 2026-11-25)."""
    held = []
    for f in files:
        try:
            held.append(f.read_bytes())
        except FileNotFoundError:
            continue
    return b"".join(held)


def test_spilled_blocks_and_shuffle_files_hold_no_identifier_in_clear(spark: SparkSession) -> None:
    rows = spark.range(5_000).select(F.concat(F.lit(MARKER), F.col("id").cast("string")).alias("nhs"))
    on_disk = rows.repartition(3, "nhs").persist(StorageLevel.DISK_ONLY)
    try:
        assert on_disk.count() == 5_000
        files = _scratch_files(spark)
        written = _contents(files)
        assert len(written) > 5_000 * len(MARKER) // 4  # the blocks and shuffle files are there
        assert MARKER.encode() not in written
    finally:
        on_disk.unpersist(blocking=True)


def test_the_jit_compiles_spark_s_huge_generated_methods(spark: SparkSession) -> None:
    """Without the flag, 20 keyed hashes a row run in the interpreter at half speed."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert JIT_HUGE_METHODS in arguments


def test_executors_the_session_starts_get_the_same_flag(spark: SparkSession) -> None:
    """Against a spark:// master the per-row work runs in executor JVMs, not this one."""
    assert JIT_HUGE_METHODS in spark.sparkContext.getConf().get("spark.executor.extraJavaOptions", "")


def test_the_flag_joins_the_java_options_given_never_replacing_them() -> None:
    given = "-XX:+UseG1GC -Dsite=leeds"
    assert with_java_option(given, JIT_HUGE_METHODS) == f"{given} {JIT_HUGE_METHODS}"
    assert with_java_option(f"{given} {JIT_HUGE_METHODS}", JIT_HUGE_METHODS) == f"{given} {JIT_HUGE_METHODS}"
    assert with_java_option("", JIT_HUGE_METHODS) == JIT_HUGE_METHODS
