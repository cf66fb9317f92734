"""Seconds per logged stage of a run, read from its own JSON stage lines."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from caredata_spark.observability import LOGGER_NAME


class _StageSeconds(logging.Handler):
    """Seconds per stage name, summed, from the JSON `stage_end` lines of the run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = defaultdict(float)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = json.loads(record.getMessage())
        except ValueError:
            return
        if event.get("event") == "stage_end":
            self.seconds[event["stage"]] += float(event["seconds"])


@contextmanager
def stage_seconds() -> Iterator[dict[str, float]]:
    logger = logging.getLogger(LOGGER_NAME)
    handler, level = _StageSeconds(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.seconds
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
