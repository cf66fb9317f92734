"""One real local Spark session for the whole test run, and one store per Delta backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from caredata_spark.config import SparkSettings, StorageSettings
from caredata_spark.session import build_session, delta_connector_available
from caredata_spark.storage import DeltaStore, open_store


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_session(
        SparkSettings(app_name="caredata-tests", shuffle_partitions=2, driver_memory="2g")
    )
    yield session
    session.stop()


@pytest.fixture(params=["delta-rs", "delta-spark"])
def store(request: pytest.FixtureRequest, spark: SparkSession) -> DeltaStore:
    """The same storage tests run against each backend the session can load."""
    if request.param == "delta-spark" and not delta_connector_available(spark):
        pytest.skip("delta-spark connector not on the classpath (needs Maven; see README)")
    return open_store(spark, StorageSettings(backend=request.param))
