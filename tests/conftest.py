"""One real local Spark session per test process, one store per Delta backend, keys
generated at test time, and the session's event log for leak checks.

`make test` runs two pytest-xdist workers (`--dist loadfile`): each is a process with its
own session, and a module never spans the two, so module fixtures are built once. One
process leaves a core idle part of the time (py4j calls, planning, small jobs); a second
fills it, for about a fifth less wall time (README, Development).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from caredata_spark.config import KeySettings, SparkSettings, StorageSettings
from caredata_spark.keys import generate_keys
from caredata_spark.session import build_session, delta_connector_available
from caredata_spark.storage import DeltaStore, open_store


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    scratch = str(tmp_path_factory.mktemp("spark-local"))  # shuffle files, spilled blocks
    session = build_session(
        SparkSettings(app_name="caredata-tests", shuffle_partitions=2, driver_memory="2g",
                      conf={"spark.local.dir": scratch})
    )
    yield session
    session.stop()


@pytest.fixture(params=["delta-rs", "delta-spark"])
def store(request: pytest.FixtureRequest, spark: SparkSession) -> DeltaStore:
    """The same storage tests run against each backend the session can load."""
    if request.param == "delta-spark" and not delta_connector_available(spark):
        pytest.skip("delta-spark connector not on the classpath (needs Maven; see README)")
    return open_store(spark, StorageSettings(backend=request.param))


@pytest.fixture
def delta_rs(spark: SparkSession) -> DeltaStore:
    """The engine every machine has (no Maven needed)."""
    return open_store(spark, StorageSettings(backend="delta-rs"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySettings:
    """Every role's key, generated for this module; no environment variable is used."""
    directory = tmp_path_factory.mktemp("keys")
    generate_keys(directory)
    return KeySettings(directory=str(directory), linkage_env="NO_SUCH_ENV_1",
                       vault_env="NO_SUCH_ENV_2", pseudonym_env="NO_SUCH_ENV_3",
                       transport_env="NO_SUCH_ENV_4")


@pytest.fixture
def event_log(spark: SparkSession, tmp_path: Path) -> Iterator[Path]:
    """Record the shared session's events for one test, as spark.eventLog.enabled would.

    Spark's own EventLoggingListener writes the file, so what it records (plans, metrics,
    task results) is exactly what a real event log of this session would hold.
    """
    sc = spark.sparkContext
    jvm, jsc = sc._jvm, sc._jsc.sc()  # type: ignore[union-attr]
    directory = tmp_path / "eventlog"
    directory.mkdir()
    conf = jsc.conf().clone().set("spark.eventLog.compress", "false")
    listener = jvm.org.apache.spark.scheduler.EventLoggingListener(  # type: ignore[union-attr]
        "keyed-hash-test",
        jvm.scala.Option.apply(None),  # type: ignore[union-attr]
        jvm.java.net.URI(directory.as_uri()),  # type: ignore[union-attr]
        conf,
        jsc.hadoopConfiguration(),
    )
    listener.start()
    jsc.addSparkListener(listener)
    try:
        yield directory
    finally:
        jsc.listenerBus().waitUntilEmpty()
        jsc.removeSparkListener(listener)
        listener.stop()
