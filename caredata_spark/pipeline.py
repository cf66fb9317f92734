"""`caredata run`: the whole pipeline for schedulers, restartable step by step.

Steps run in order for a run date. The run ledger (`ops/pipeline_runs`) records each
step's start and finish; a finished step is skipped when the run is repeated, and a run
that died mid-step resumes at that step (each step is itself idempotent: ingest and
linkage consume only what they have not consumed, under Delta transaction ids). Each
step's figures go to `ops/metrics` and to the log as JSON lines; while a step runs, its
active Spark stages are logged every 30 seconds (`progress`).

Exit codes a scheduler can act on: 0 done; 3 done, but some inputs were refused (see the
ingest ledger), also when the run completes on a later attempt, or is repeated; 1 a step
failed (re-run to resume); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import functions as F

from caredata_spark.cli import Command, Context
from caredata_spark.errors import CaredataError, InputRefused, UsageError
from caredata_spark.observability import get_logger, log_event
from caredata_spark.progress import progress
from caredata_spark.tables import METRICS, PIPELINE_RUNS, table_path

LOG = get_logger("pipeline")
LEDGER_SCHEMA = (
    "run_date date, step string, status string, at timestamp, seconds double, error string"
)
METRICS_SCHEMA = "run_date date, step string, metrics string, at timestamp"


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Context, dt.date], dict[str, Any]]


def _ingest(context: Context, run_date: dt.date) -> dict[str, Any]:
    from caredata_spark.ingest import ingest

    result = ingest(
        context.spark, context.store, context.settings,
        context.require("landing"), context.require("warehouse"),
    )
    totals = {k: sum(c[k] for c in result.counts.values()) for k in ("read", "accepted", "quarantined", "dropped")}
    return {"run_id": result.run_id, "files": result.files, "refused": len(result.refused), **totals}


def _link(context: Context, run_date: dt.date) -> dict[str, Any]:
    from caredata_spark.linkage.job import link
    from caredata_spark.linkage.settings import linkage_settings

    return link(
        context.spark, context.store, context.require("warehouse"),
        linkage_settings(context.settings.linkage),
    )


def _publish(context: Context, run_date: dt.date) -> dict[str, Any]:
    from caredata_spark.publish import default_out, publish, require_all_published

    warehouse = context.require("warehouse")
    result = publish(context.spark, context.store, warehouse, default_out(warehouse), requester="caredata run")
    require_all_published(result)
    return result.figures()


STEPS = (Step("ingest", _ingest), Step("link", _link), Step("publish", _publish))


class StepFailed(CaredataError):
    """A step raised; the ledger records it and a re-run resumes at that step."""


def _finished_steps(context: Context, run_date: dt.date) -> set[str]:
    path = table_path(context.require("warehouse"), PIPELINE_RUNS)
    if not context.store.exists(path):
        return set()
    rows = (
        context.store.read(path)
        .filter((F.col("run_date") == F.lit(run_date)) & (F.col("status") == "finished"))
        .select("step")
        .distinct()
        .collect()  # a handful of steps per date
    )
    return {r["step"] for r in rows}


def _refused_earlier(context: Context, run_date: dt.date, steps: set[str]) -> bool:
    """Whether a step of `steps`, finished by an earlier attempt at `run_date`, refused inputs.

    A run that refused files and then died resumes without re-running that step; its exit
    code must still say so, or the refusal alert of a resumed run would be lost.
    """
    path = table_path(context.require("warehouse"), METRICS)
    if not steps or not context.store.exists(path):
        return False
    rows = (
        context.store.read(path)
        .filter((F.col("run_date") == F.lit(run_date)) & F.col("step").isin(*sorted(steps)))
        .select("metrics")
        .collect()  # one row per finished step of one date
    )
    return any(json.loads(r["metrics"]).get("refused") for r in rows)


def _record(context: Context, run_date: dt.date, step: str, status: str, seconds: float | None, error: str | None) -> None:
    row = context.spark.createDataFrame(
        [(run_date, step, status, None, seconds, error)], LEDGER_SCHEMA
    ).withColumn("at", F.current_timestamp())
    context.store.write(row, table_path(context.require("warehouse"), PIPELINE_RUNS))


def _metrics(context: Context, run_date: dt.date, step: str, figures: dict[str, Any]) -> None:
    row = context.spark.createDataFrame(
        [(run_date, step, json.dumps(figures, default=str, sort_keys=True), None)], METRICS_SCHEMA
    ).withColumn("at", F.current_timestamp())
    context.store.write(row, table_path(context.require("warehouse"), METRICS))


def run_pipeline(context: Context, run_date: dt.date, steps: tuple[Step, ...] = STEPS) -> dict[str, dict[str, Any]]:
    """Run the steps not yet finished for `run_date`; figures per step that ran."""
    done = _finished_steps(context, run_date)
    figures: dict[str, dict[str, Any]] = {}
    refused = _refused_earlier(context, run_date, done & {step.name for step in steps})
    for step in steps:
        if step.name in done:
            log_event(LOG, "pipeline.skip", step=step.name, run_date=run_date, reason="finished")
            continue
        _record(context, run_date, step.name, "started", None, None)
        started = time.perf_counter()
        try:
            with progress(context.spark, LOG, step.name):
                figures[step.name] = step.run(context, run_date)
        except Exception as err:
            seconds = time.perf_counter() - started
            _record(context, run_date, step.name, "failed", seconds, type(err).__name__)
            if isinstance(err, CaredataError):
                raise
            raise StepFailed(
                f"step {step.name} of run {run_date} failed ({type(err).__name__}); "
                "re-run `caredata run` to resume from it"
            ) from err
        seconds = round(time.perf_counter() - started, 3)
        figures[step.name]["seconds"] = seconds
        refused = refused or bool(figures[step.name].get("refused"))
        _metrics(context, run_date, step.name, figures[step.name])
        _record(context, run_date, step.name, "finished", seconds, None)
        log_event(LOG, "pipeline.step", step=step.name, run_date=run_date, **figures[step.name])
    if refused:
        raise SomeInputsRefused(
            f"run {run_date} finished, but some submissions were refused (see ingest/submissions)"
        )
    return figures


class SomeInputsRefused(InputRefused):
    """The pipeline finished; refused files are in the ledger with their reasons."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", help="run date YYYY-MM-DD (default today)")


def _run(context: Context, args: argparse.Namespace) -> None:
    try:
        run_date = dt.date.fromisoformat(args.date) if args.date else dt.date.today()
    except ValueError:
        raise UsageError(f"--date: expected YYYY-MM-DD, got {args.date!r}") from None
    figures = run_pipeline(context, run_date)
    print(json.dumps({"run_date": str(run_date), "steps": figures}, indent=2, default=str))


COMMAND = Command(
    name="run",
    help="the whole pipeline for schedulers (ingest, link, ...): restartable, idempotent",
    add_arguments=_add_arguments,
    run=_run,
)
