"""Progress of long steps: while a step runs, a thread logs its active Spark stages as one
JSON line every `every` seconds (tasks done of total, running, failed).

It polls the driver's status tracker, which only reads the scheduler's in-memory state:
nothing runs on executors and no JVM listener class is needed. The line carries stage
ids and task counts, never stage names (call sites) or data. The step is also set as the
Spark job description, so the Spark UI and event log say which step a job belongs to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyspark import StatusTracker
from pyspark.sql import SparkSession

from caredata_spark.observability import log_event

PROGRESS_SECONDS = 30.0


def active_stages(tracker: StatusTracker) -> list[dict[str, Any]]:
    """Task counts of the stages running now (stages that ended meanwhile are skipped)."""
    stages = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            stages.append(
                {
                    "stage": stage_id,
                    "tasks": info.numTasks,
                    "done": info.numCompletedTasks,
                    "running": info.numActiveTasks,
                    "failed": info.numFailedTasks,
                }
            )
    return stages


@contextmanager
def progress(
    spark: SparkSession, logger: logging.Logger, step: str, every: float = PROGRESS_SECONDS
) -> Iterator[None]:
    """Log `step`'s progress every `every` seconds while the block runs."""
    context = spark.sparkContext
    tracker = context.statusTracker()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every):
            stages = active_stages(tracker)
            if stages:
                log_event(logger, "progress", step=step, stages=stages)

    reporter = threading.Thread(target=report, name=f"caredata-progress-{step}", daemon=True)
    context.setJobDescription(f"caredata {step}")
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
        context.setJobDescription(None)  # type: ignore[arg-type]
