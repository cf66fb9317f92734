"""Pseudonymisation against a plain `sha2` column, and a whole amber release at scale.

Three figures, all over the same rows in the same session:

1. per value: `keyed_hashes` (HMAC-SHA256, two `sha2` calls) of a person id and a record
   key on every row, against `F.sha2` of the same two columns: the cost of the crypto.
2. as a release runs it: rows joined to the link map to learn their person (every
   release does this join), with the pseudonyms computed once per record key on the link
   map (`pseudonymisation.pseudonyms`) against the same join followed by `F.sha2` of the
   person id and record key on every row. Measured for a GP-events shape (many rows per
   key) and a hospital shape (one row per key), and for the join alone.
3. a whole `release` (objections, pseudonyms, minimisation, risk report, CSV, envelopes,
   manifest, audit) of a generated warehouse of `people` people.

    python -m bench.bench_release --rows 5000000 --people 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.config import KeySettings, Settings
from caredata_spark.keyed_hash import derived_key_frame, keyed_hashes
from caredata_spark.keys import Role, generate_keys, key_path
from caredata_spark.pseudonymisation import PERSON, RECORD, key_info, pseudonyms
from caredata_spark.release import ReleaseRequest, release
from caredata_spark.storage import open_store
from caredata_spark.tables import LINK_MAP, OBJECTIONS, clinical, table_path

GP_ROWS_PER_KEY = 20  # synthetic GP record: ~10 events a person a year over 2 years
GP_EVENTS_PER_PERSON = 5  # for the whole-release figure, to fit a 2-core machine
HES_EPISODES_PER_PERSON = 0.3
TYPE2_SHARE = 0.03
RELEASE_DAY = dt.date(2025, 6, 1)


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _evaluate(df: DataFrame) -> None:
    """Evaluate every column of every row without the cost of storing them."""
    df.write.format("noop").mode("overwrite").save()


def _key_settings(directory: Path) -> KeySettings:
    generate_keys(directory)
    return KeySettings(directory=str(directory), linkage_env="-", vault_env="-", pseudonym_env="-", transport_env="-")


def _shape(spark: SparkSession, rows: int, rows_per_key: int) -> tuple[DataFrame, DataFrame]:
    """(rows, links): `rows` records over rows/rows_per_key record keys, one person each."""
    keys = max(rows // rows_per_key, 1)
    links = spark.range(keys).select(
        F.lit("gp").alias("source"),
        F.concat(F.lit("P"), (F.col("id") % 7000).cast("string"), F.lit("/"), F.col("id").cast("string")).alias("record_key"),
        F.substring(F.sha2(F.col("id").cast("string"), 256), 1, 32).alias("person_id"),
    )
    records = spark.range(rows).select(
        F.concat(F.lit("P"), ((F.col("id") % keys) % 7000).cast("string"), F.lit("/"), (F.col("id") % keys).cast("string")).alias("record_key"),
        (F.col("id") % 1000).cast("double").alias("VALUE"),
    )
    return records.cache(), links.cache()


@contextmanager
def shuffle_joins(spark: SparkSession) -> Iterator[None]:
    """Joins as at national scale, where the link map is far too big to broadcast."""
    name = "spark.sql.autoBroadcastJoinThreshold"
    before = spark.conf.get(name)
    spark.conf.set(name, "-1")
    try:
        yield
    finally:
        spark.conf.set(name, before)


def pseudonymisation_figures(spark: SparkSession, rows: int, master: str) -> dict[str, Any]:
    with shuffle_joins(spark):
        return _pseudonymisation_figures(spark, rows, master)


def _pseudonymisation_figures(spark: SparkSession, rows: int, master: str) -> dict[str, Any]:
    key = derived_key_frame(spark, master, key_info("Bench University", "Benchmarking"))
    figures: dict[str, Any] = {"release.rows": rows}
    for shape, per_key in (("gp", GP_ROWS_PER_KEY), ("hes", 1)):
        records, links = _shape(spark, rows, per_key)
        records.count()
        links.count()
        joined = records.join(links, on="record_key", how="inner")
        try:
            per_value_sha2 = _seconds(lambda: _evaluate(
                joined.select(F.sha2("person_id", 256), F.sha2(F.concat_ws("/", "source", "record_key"), 256))
            ))
            per_value_hmac = _seconds(lambda: _evaluate(
                joined.transform(keyed_hashes(key, {PERSON: F.col("person_id"), RECORD: F.concat_ws("/", "source", "record_key")}))
                .select(PERSON, RECORD)
            ))
            join_only = _seconds(lambda: _evaluate(joined.select("person_id", "record_key", "VALUE")))
            per_key_hmac = _seconds(lambda: _evaluate(
                records.join(links.transform(pseudonyms(key)).select("record_key", PERSON, RECORD),
                             on="record_key", how="inner").select(PERSON, RECORD, "VALUE")
            ))
        finally:
            records.unpersist()
            links.unpersist()
        prefix = f"release.{shape}_rows_per_key_{per_key}"
        figures.update({
            f"{prefix}.join_sha2_per_row_rows_per_s": round(rows / per_value_sha2),
            f"{prefix}.join_hmac_per_row_rows_per_s": round(rows / per_value_hmac),
            f"{prefix}.join_only_rows_per_s": round(rows / join_only),
            f"{prefix}.release_pseudonyms_rows_per_s": round(rows / per_key_hmac),
            f"{prefix}.hmac_per_row_vs_sha2": round(per_value_sha2 / per_value_hmac, 2),
            f"{prefix}.release_pseudonyms_vs_sha2": round(per_value_sha2 / per_key_hmac, 2),
        })
    figures["release.target_pseudonyms_vs_sha2"] = ">= 0.8"
    return figures


def hash_only_figures(spark: SparkSession, rows: int, master: str) -> dict[str, Any]:
    """Figure 1: the crypto alone, per value, on a cached frame."""
    key = derived_key_frame(spark, master, key_info("Bench University", "Benchmarking"))
    ids = spark.range(rows).select(
        F.lit("gp").alias("source"), F.col("id").cast("string").alias("record_key"),
        F.substring(F.sha2(F.col("id").cast("string"), 256), 1, 32).alias("person_id"),
    ).cache()
    ids.count()
    try:
        sha2 = _seconds(lambda: _evaluate(
            ids.select(F.sha2("person_id", 256), F.sha2(F.concat_ws("/", "source", "record_key"), 256))
        ))
        hmac = _seconds(lambda: _evaluate(ids.transform(pseudonyms(key)).select(PERSON, RECORD)))
    finally:
        ids.unpersist()
    return {
        "release.hash_only.sha2_rows_per_s": round(rows / sha2),
        "release.hash_only.hmac_rows_per_s": round(rows / hmac),
        "release.hash_only.hmac_vs_sha2": round(sha2 / hmac, 2),
    }


def _warehouse(spark: SparkSession, root: Path, people: int) -> int:
    """Clinical gp_events and hes_apc, link map and type 2 objections for `people` people."""
    store, warehouse = open_store(spark), str(root / "warehouse")
    person = F.col("id")
    gp_key = F.concat(F.lit("P"), (person % 7000).cast("string"), F.lit("/"), person.cast("string"))
    events = spark.range(people * GP_EVENTS_PER_PERSON).select(
        F.concat(F.lit("P"), ((F.col("id") % people) % 7000).cast("string"), F.lit("/"),
                 (F.col("id") % people).cast("string")).alias("record_key"),
        F.date_add(F.lit(dt.date(2023, 4, 1)), (F.col("id") % 730).cast("int")).alias("EVENT_DATE"),
        (F.lit(1000) + F.col("id") % 300).cast("string").alias("SNOMED_CODE"),
        (F.col("id") % 90).cast("double").alias("VALUE"),
        (F.col("id") % people % 95).cast("int").alias("age"),
        F.when(F.col("id") % people % 2 == 0, "1").otherwise("2").alias("sex"),
        F.concat(F.lit("A"), (F.col("id") % people % 40).cast("string")).alias("area"),
    )
    episodes = int(people * HES_EPISODES_PER_PERSON)
    admitted = spark.range(episodes).select(
        F.concat(F.lit("EPI"), F.col("id").cast("string")).alias("record_key"),
        F.date_add(F.lit(dt.date(2023, 4, 1)), (F.col("id") % 730).cast("int")).alias("ADMIDATE"),
        F.concat(F.lit("I"), (F.col("id") % 90).cast("string")).alias("DIAG_01"),
        (F.col("id") % 95).cast("int").alias("age"),
        F.when(F.col("id") % 2 == 0, "1").otherwise("2").alias("sex"),
        F.concat(F.lit("A"), (F.col("id") % 40).cast("string")).alias("area"),
    )
    person_id = F.substring(F.sha2(person.cast("string"), 256), 1, 32)
    links = spark.range(people).select(F.lit("gp").alias("source"), gp_key.alias("record_key"), person_id.alias("person_id")).unionByName(
        spark.range(episodes).select(
            F.lit("hes_apc").alias("source"), F.concat(F.lit("EPI"), F.col("id").cast("string")).alias("record_key"),
            F.substring(F.sha2((F.col("id") * 7 % people).cast("string"), 256), 1, 32).alias("person_id"),
        )
    )
    objections = spark.range(int(people * TYPE2_SHARE)).select(
        F.concat(F.lit("P"), ((F.col("id") * 31 % people) % 7000).cast("string"), F.lit("/"),
                 (F.col("id") * 31 % people).cast("string")).alias("record_key"),
        F.lit(2).alias("objection_type"), F.lit("dissent").alias("status"),
        F.lit(dt.date(2024, 1, 1)).alias("event_date"), F.lit("bench").alias("submission_id"), F.lit(1).cast("long").alias("run_id"),
    )
    for name, frame in ((clinical("gp_events"), events), (clinical("hes_apc"), admitted), (LINK_MAP, links), (OBJECTIONS, objections)):
        store.write(frame, table_path(warehouse, name))
    return people * GP_EVENTS_PER_PERSON + episodes


def release_figures(spark: SparkSession, people: int, root: Path, keys: KeySettings) -> dict[str, Any]:
    generate_keys(root / "recipient")
    agreements = root / "agreements"
    agreements.mkdir()
    (agreements / "BENCH.yaml").write_text(yaml.safe_dump({
        "id": "BENCH", "flow": "amber", "purpose": "Benchmarking", "territory": "England",
        "recipient": {"organisation": "Bench University", "public_key": str(root / "recipient" / "transport.pub")},
        "datasets": {"gp_events": ["EVENT_DATE", "SNOMED_CODE", "VALUE", "age", "sex", "area"],
                     "hes_apc": ["ADMIDATE", "DIAG_01", "age", "sex", "area"]},
        "dates": "month", "start": dt.date(2025, 1, 1), "end": dt.date(2025, 12, 31), "destroy_by": dt.date(2026, 1, 1),
    }))
    started = time.perf_counter()
    rows = _warehouse(spark, root, people)
    generated = time.perf_counter() - started
    request = ReleaseRequest("BENCH", "bench", (), str(agreements))
    started = time.perf_counter()
    result = release(spark, open_store(spark), Settings(keys=keys), str(root / "warehouse"), request,
                     root / "out", today=RELEASE_DAY)
    seconds = time.perf_counter() - started
    prefix = f"release.{people}_people"
    return {
        f"{prefix}.warehouse_rows": rows,
        f"{prefix}.generate_seconds": round(generated, 1),
        f"{prefix}.released_rows": sum(result.rows.values()),
        f"{prefix}.release_seconds": round(seconds, 1),
        f"{prefix}.release_rows_per_s": round(sum(result.rows.values()) / seconds),
    }


def run(spark: SparkSession, rows: int = 5_000_000, people: int = 1_000_000) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="caredata-bench-release-"))
    try:
        keys = _key_settings(root / "keys")
        master = str(key_path(keys, Role.PSEUDONYM))
        return {
            **hash_only_figures(spark, rows, master),
            **pseudonymisation_figures(spark, rows, master),
            **(release_figures(spark, people, root, keys) if people else {}),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    from caredata_spark.config import SparkSettings
    from caredata_spark.session import build_session

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--people", type=int, default=1_000_000, help="0 skips the whole-release figure")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = build_session(SparkSettings(app_name="caredata-bench-release", driver_memory="8g"))
    for name, value in run(spark, args.rows, args.people).items():
        print(f"{name:<60} {value}")


if __name__ == "__main__":
    main()
