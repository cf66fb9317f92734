"""The one place a SparkSession is built.

Local runs (laptop, tests, `make demo`) get defaults sized for a 2-core machine and stay on
loopback; under spark-submit the master and resources come from the submit command, and
only the platform's own settings are added.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from caredata_spark.config import SparkSettings

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOOPBACK = "127.0.0.1"
LOG4J_CONF = Path(__file__).resolve().parent / "log4j2.properties"
# HotSpot leaves methods over 8,000 bytecodes to the interpreter; Spark's generated code for
# a projection of many keyed hashes is such a method (20 HMACs a row ran at half speed)
JIT_HUGE_METHODS = "-XX:-DontCompileHugeMethods"
EXECUTOR_JAVA_OPTIONS = "spark.executor.extraJavaOptions"


def under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python the gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def with_java_option(options: str, option: str) -> str:
    """`options` with `option` appended, unless it is already one of them."""
    return options if option in options.split() else f"{options} {option}".strip()


def _submitted(key: str) -> str:
    """A setting spark-submit gave the JVM it started, read before the SparkContext exists
    (executors are launched with the options the context starts with); "" when local."""
    if not under_spark_submit():
        return ""
    SparkContext._ensure_initialized()  # attaches to spark-submit's gateway, starts nothing
    return SparkConf().get(key, "") or ""


def build_session(settings: SparkSettings | None = None) -> SparkSession:
    settings = settings or SparkSettings()
    builder = SparkSession.builder.appName(settings.app_name)
    if not under_spark_submit():
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        # Python workers must run the same interpreter (and so the same packages) as us
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.master(settings.master)
            .config("spark.driver.host", LOOPBACK)
            .config("spark.driver.bindAddress", LOOPBACK)
            .config("spark.driver.memory", settings.driver_memory)
            .config("spark.ui.enabled", str(settings.ui_enabled).lower())
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J_CONF} {JIT_HUGE_METHODS}")
        )
    builder = (
        builder.config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")
        # ingest caches and shuffles rows holding identifiers in clear; whatever Spark spills
        # to its scratch disks (shuffle files, cached blocks) is encrypted under a per-app key
        .config("spark.io.encryption.enabled", "true")
    )
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    # executors (a spark:// master, a cluster) do the per-row work; the flag joins whatever
    # Java options the YAML or the submit command gave them, never replacing those
    executor_options = settings.conf.get(EXECUTOR_JAVA_OPTIONS) or _submitted(EXECUTOR_JAVA_OPTIONS)
    builder = builder.config(EXECUTOR_JAVA_OPTIONS, with_java_option(executor_options, JIT_HUGE_METHODS))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark


def delta_connector_available(spark: SparkSession) -> bool:
    """True when the delta-spark JVM connector is loaded and enabled in this session.

    Both must hold: the classes on the classpath (`--packages io.delta:delta-spark_2.13:...`)
    and the session extension configured, or Delta SQL commands would fail at runtime.
    """
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_EXTENSION not in extensions:
        return False
    jvm = getattr(spark.sparkContext, "_jvm", None)
    if jvm is None:
        return True  # Spark Connect / Databricks: the server owns the classpath
    try:
        jvm.java.lang.Class.forName(DELTA_EXTENSION)
    except Exception:  # py4j wraps ClassNotFoundException
        return False
    return True
