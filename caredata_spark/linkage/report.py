"""`linkage/report`: what each run linked, how, and how sure it was, in one tidy table.

One row per (run, metric, source, provider, match_step, level) with a numeric `value`:

| metric                 | grain                                  | value                          |
|------------------------|----------------------------------------|--------------------------------|
| records                | source, provider, match_step           | record keys (match_step `unlinked` when none) |
| ambiguous              | source, provider, match_step, level    | keys ambiguous at step `level` (several persons), by final outcome |
| score_distribution     | source, match_step, level              | keys scored, by best weight rounded down (bits) |
| expected_false_links   | source                                 | sum of (1 - match probability) over scored links |
| new_persons            | level (origin gp / hes)                | persons founded by the run     |
| em_m, em_u             | level (`comparison:level`)             | fitted probabilities           |
| model_run, model_signatures | -                                 | the run whose EM fitted em_m and em_u (earlier when reused), and its sample of signatures |
| training_pairs, em_iterations, em_session_match_share | level (training session) | EM sessions |
| threshold_weight, prior_weight, random_pairs | -                | scalars of the scored step     |

Counts only: no record key, person id or hash ever reaches the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.linkage.records import GP
from caredata_spark.linkage.scoring import COMPARISONS, SCORED, FittedParameters, ScoredFit

REPORT_DDL = (
    "run int, metric string, source string, provider string, match_step string, level string, "
    "value double"
)
REPORT_COLUMNS = ("run", "metric", "source", "provider", "match_step", "level", "value")
UNLINKED = "unlinked"
SCORE_RANGE = (-30, 50)  # histogram bins beyond these are folded into the end bins


def _step() -> Column:
    return F.coalesce(F.col("match_step"), F.lit(UNLINKED)).alias("match_step")


def _rows(frame: DataFrame, metric: str, run: int) -> DataFrame:
    """Complete a grouped count into report rows (absent grain columns are null)."""
    return frame.select(
        *[
            F.col(c) if c in frame.columns else F.lit(None).cast("string").alias(c)
            for c in ("source", "provider", "match_step", "level")
        ],
        F.col("value").cast("double").alias("value"),
    ).select(F.lit(run).alias("run"), F.lit(metric).alias("metric"), *REPORT_COLUMNS[2:])


def _model_rows(fit: ScoredFit) -> Iterable[tuple[str, str | None, float]]:
    yield "threshold_weight", None, fit.min_weight
    yield "random_pairs", None, float(fit.random_pairs)
    for rule, pairs, session in fit.sessions:
        yield "training_pairs", rule, float(pairs)
        yield "em_iterations", rule, float(session.iterations)
        yield "em_session_match_share", rule, session.prior
    if fit.model is None:
        return
    yield "prior_weight", None, fit.model.prior_weight
    if fit.fitted_run is not None:
        yield "model_run", None, float(fit.fitted_run)
        yield "model_signatures", None, float(fit.fitted_signatures)
    for comparison, ms, us in zip(COMPARISONS, fit.model.m, fit.model.u):
        for name, m, u in zip(comparison.levels, ms, us):
            yield "em_m", f"{comparison.name}:{name}", m
            yield "em_u", f"{comparison.name}:{name}", u


def _tallied(outcomes: DataFrame) -> DataFrame:
    """Keys and expected false links at the finest grain any per-record metric uses.

    Each metric below sums this one small aggregation (checkpointed: otherwise Spark pushes
    each metric's filter below it and scans the outcomes, a row per record key, four times).
    """
    low, high = SCORE_RANGE
    weight = F.col("best_weight")
    # greatest and least skip nulls, so an unscored key needs its own null bin
    score_bin = F.when(weight.isNotNull(), F.greatest(F.least(F.floor(weight), F.lit(high)), F.lit(low)))
    false_share = 1.0 / (1.0 + F.pow(F.lit(2.0), F.col("match_weight")))
    grain = ("source", "provider", _step(), "ambiguous_step", score_bin.cast("string").alias("score_bin"))
    tallies = outcomes.groupBy(*grain).agg(
        F.count(F.lit(1)).alias("keys"),
        F.sum(F.when(F.col("match_step") == SCORED, false_share)).alias("false_share"),
    )
    return tallies.localCheckpoint(eager=True)


def _summed(tallies: DataFrame, *keys: Column | str) -> DataFrame:
    return tallies.groupBy(*keys).agg(F.sum("keys").alias("value"))


def build_report(
    spark: SparkSession,
    outcomes: DataFrame,
    new_persons: DataFrame,
    fit: ScoredFit,
    run: int,
) -> DataFrame:
    """The run's report rows. `outcomes`: one row per record key linked by this run
    (source, provider, match_step, match_weight, best_weight, ambiguous_step);
    `new_persons`: (person_id, origin) of persons founded by this run.
    """
    tallies = _tallied(outcomes)
    model = spark.createDataFrame(
        [(metric, level, value) for metric, level, value in _model_rows(fit)],
        "metric string, level string, value double",
    )
    parts = [
        _rows(_summed(tallies, "source", "provider", "match_step"), "records", run),
        _rows(
            _summed(
                tallies.filter(F.col("ambiguous_step").isNotNull()),
                "source", "provider", "match_step", F.col("ambiguous_step").alias("level"),
            ),
            "ambiguous",
            run,
        ),
        _rows(
            _summed(
                tallies.filter(F.col("score_bin").isNotNull()),
                "source", "match_step", F.col("score_bin").alias("level"),
            ),
            "score_distribution",
            run,
        ),
        _rows(
            tallies.filter(F.col("match_step") == SCORED)
            .groupBy("source")
            .agg(F.sum("false_share").alias("value")),
            "expected_false_links",
            run,
        ),
        _rows(
            new_persons.groupBy(F.col("origin").alias("level")).agg(
                F.count_distinct("person_id").alias("value")
            ),
            "new_persons",
            run,
        ),
        model.select(
            F.lit(run).alias("run"),
            "metric",
            *[F.lit(None).cast("string").alias(c) for c in ("source", "provider", "match_step")],
            "level",
            "value",
        ),
    ]
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def fitted_parameters(report: DataFrame) -> FittedParameters | None:
    """The m and u of the latest run in `report` that recorded them, to reuse.

    None when no run did, or when its levels are not today's comparisons' (a report written
    before a comparison changed): the run then estimates its own. A report without
    `model_signatures` (older runs) counts as a partial sample, so it is re-estimated too.
    """
    metrics = ("em_m", "em_u", "model_run", "model_signatures")
    rows = report.filter(F.col("metric").isin(*metrics)).collect()  # a few dozen per run
    latest = max((row["run"] for row in rows if row["metric"] == "em_m"), default=None)
    if latest is None:
        return None
    values = {(row["metric"], row["level"]): row["value"] for row in rows if row["run"] == latest}
    try:
        m, u = (
            tuple(tuple(values[metric, f"{c.name}:{level}"] for level in c.levels) for c in COMPARISONS)
            for metric in ("em_m", "em_u")
        )
    except KeyError:
        return None
    fitted = values.get(("model_run", None), latest)
    return FittedParameters(int(fitted), m, u, int(values.get(("model_signatures", None), 0)))


def summarise(report: DataFrame, run: int) -> dict[str, Any]:
    """The run's headline figures, from its report rows (a few hundred at most)."""
    totals = (
        report.filter((F.col("run") == run) & (F.col("metric") != "score_distribution"))
        .groupBy("metric", "source", "match_step", "level")
        .agg(F.sum("value").alias("value"))
        .collect()
    )
    records: dict[str, dict[str, int]] = {}
    ambiguous: dict[str, int] = {}
    summary: dict[str, Any] = {"run": run, "records": records, "ambiguous": ambiguous}
    for row in totals:
        metric, source, value = row["metric"], row["source"], row["value"]
        if metric == "records":
            records.setdefault(source, {})[row["match_step"]] = int(value)
        elif metric == "ambiguous":
            ambiguous[source] = ambiguous.get(source, 0) + int(value)
        elif row["level"] is not None and source is None:
            summary.setdefault(metric, {})[row["level"]] = value
        elif metric == "expected_false_links":
            summary.setdefault(metric, {})[source] = round(value, 3)
        else:
            summary[metric] = value
    hospital = [steps for source, steps in records.items() if source != GP]
    total = sum(sum(steps.values()) for steps in hospital)
    linked = sum(n for steps in hospital for step, n in steps.items() if step != UNLINKED)
    summary["hes_linked_share"] = round(linked / total, 6) if total else None
    return summary
