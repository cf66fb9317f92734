"""Progress lines while a step runs: active stages with task counts, and nothing after."""

from __future__ import annotations

import json
import logging
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark.progress import progress

DESCRIPTION = "spark.job.description"


class Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(json.loads(record.getMessage()))


def test_active_stages_are_logged_while_the_step_runs(spark: SparkSession) -> None:
    logger = logging.getLogger("caredata.test_progress")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    events = Events()
    logger.addHandler(events)
    # four tasks that each sleep 0.4 s in the JVM: a stage that lasts several polls
    sleep = F.expr("reflect('java.lang.Thread', 'sleep', bigint(400))")
    try:
        with progress(spark, logger, "slow", every=0.1):
            description = spark.sparkContext.getLocalProperty(DESCRIPTION)
            spark.range(0, 4, numPartitions=4).select(sleep).collect()
        seen = len(events.events)
        time.sleep(0.3)
    finally:
        logger.removeHandler(events)

    assert description == "caredata slow"
    assert spark.sparkContext.getLocalProperty(DESCRIPTION) is None
    assert len(events.events) == seen  # the reporter stopped with the block
    assert events.events, "no progress line during a stage of 4 x 0.4 s"
    for event in events.events:
        assert set(event) == {"event", "step", "stages"} and event["event"] == "progress"
        for stage in event["stages"]:
            assert set(stage) == {"stage", "tasks", "done", "running", "failed"}
            assert 0 <= stage["done"] + stage["running"] <= stage["tasks"] == 4
