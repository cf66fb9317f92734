"""The run ledger: finished steps are skipped, a failed step is resumed, codes are kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark.cli import Context
from caredata_spark.config import Settings
from caredata_spark.errors import InputRefused
from caredata_spark.pipeline import SomeInputsRefused, Step, StepFailed, run_pipeline
from caredata_spark.tables import METRICS, PIPELINE_RUNS, table_path

DAY = dt.date(2026, 11, 1)


def context(spark: SparkSession, warehouse: Path) -> Context:
    ctx = Context(Settings(warehouse=str(warehouse), landing=str(warehouse / "landing")))
    ctx.__dict__["spark"] = spark  # the shared test session instead of building one
    return ctx


def test_finished_steps_are_skipped_and_a_failed_step_resumes(spark: SparkSession, tmp_path: Path) -> None:
    calls: list[str] = []
    broken = {"second": True}

    def first(ctx: Context, day: dt.date) -> dict:
        calls.append("first")
        return {"rows": 3}

    def second(ctx: Context, day: dt.date) -> dict:
        calls.append("second")
        if broken["second"]:
            raise RuntimeError("disk full at row 943476591")  # text must not reach the message
        return {"rows": 5}

    steps = (Step("first", first), Step("second", second))
    ctx = context(spark, tmp_path)
    with pytest.raises(StepFailed) as failed:
        run_pipeline(ctx, DAY, steps)
    assert "second" in str(failed.value) and "943476591" not in str(failed.value)
    assert failed.value.exit_code == 1

    broken["second"] = False
    figures = run_pipeline(ctx, DAY, steps)
    assert calls == ["first", "second", "second"]  # first was not run again
    assert set(figures) == {"second"}
    assert run_pipeline(ctx, DAY, steps) == {}  # a finished run changes nothing
    assert calls == ["first", "second", "second"]

    ledger = ctx.store.read(table_path(str(tmp_path), PIPELINE_RUNS))
    statuses = sorted(tuple(r) for r in ledger.select("step", "status").collect())
    assert statuses == sorted([
        ("first", "started"), ("first", "finished"), ("second", "started"), ("second", "failed"),
        ("second", "started"), ("second", "finished"),
    ])
    metrics = ctx.store.read(table_path(str(tmp_path), METRICS))
    assert metrics.filter(F.col("step") == "second").select("metrics").first()[0].startswith('{"rows": 5')


def test_refused_inputs_finish_the_run_with_exit_code_3(spark: SparkSession, tmp_path: Path) -> None:
    steps = (
        Step("ingest", lambda ctx, day: {"refused": 2}),
        Step("link", lambda ctx, day: {"rows": 1}),
    )
    with pytest.raises(SomeInputsRefused) as refused:
        run_pipeline(context(spark, tmp_path), DAY, steps)
    assert isinstance(refused.value, InputRefused) and refused.value.exit_code == 3
    ledger = context(spark, tmp_path).store.read(table_path(str(tmp_path), PIPELINE_RUNS))
    assert ledger.filter(F.col("status") == "finished").count() == 2


def test_a_resumed_run_still_reports_the_inputs_an_earlier_attempt_refused(spark: SparkSession, tmp_path: Path) -> None:
    """Ingest refuses a file, then link dies: the attempt that completes the run (and any
    repeat of it) ends with exit 3 too, or the scheduler's refusal alert would be lost."""
    broken = {"link": True}
    refusals = {"files": 1}

    def link(ctx: Context, day: dt.date) -> dict:
        if broken["link"]:
            raise RuntimeError("executor lost")
        return {"rows": 1}

    steps = (Step("ingest", lambda ctx, day: {"refused": refusals["files"]}), Step("link", link))
    ctx = context(spark, tmp_path)
    with pytest.raises(StepFailed):
        run_pipeline(ctx, DAY, steps)
    broken["link"] = False
    with pytest.raises(SomeInputsRefused):
        run_pipeline(ctx, DAY, steps)
    with pytest.raises(SomeInputsRefused):
        run_pipeline(ctx, DAY, steps)  # repeating the finished run changes nothing, says the same
    refusals["files"] = 0
    assert set(run_pipeline(ctx, DAY + dt.timedelta(days=1), steps)) == {"ingest", "link"}  # per date
