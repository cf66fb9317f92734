"""Stage logging: every stage reports rows and seconds as one JSON line.

Log records carry counts, table names and timings only, never row contents, so the log
can be shipped to ordinary monitoring without leaking identifiers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOGGER_NAME = "caredata"


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("py4j").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def log_event(logger: logging.Logger, event: str, **fields: Any) -> None:
    logger.info(json.dumps({"event": event, **fields}, default=str, sort_keys=True))


class StageMetrics(dict[str, Any]):
    """Counts a stage records while it runs; logged with its duration when it ends."""


@contextmanager
def stage(logger: logging.Logger, name: str, **context: Any) -> Iterator[StageMetrics]:
    metrics = StageMetrics(context)
    started = time.perf_counter()
    log_event(logger, "stage_start", stage=name, **context)
    try:
        yield metrics
    except BaseException as err:
        log_event(
            logger,
            "stage_failed",
            stage=name,
            seconds=round(time.perf_counter() - started, 3),
            error=type(err).__name__,
            **metrics,
        )
        raise
    log_event(
        logger, "stage_end", stage=name, seconds=round(time.perf_counter() - started, 3), **metrics
    )
