"""The scored step: a Fellegi-Sunter model with m/u probabilities estimated by EM.

It recovers links the rules miss (one mistyped NHS digit, day/month swapped, a DOB digit
wrong, a stale postcode) while staying on hashes:

- Blocking (`BLOCKING_RULES`): the NHS number with one digit deleted (10 keys: any single
  wrong digit still shares 9), DOB + sex + postcode district, swapped DOB + district, and
  two-of-three DOB parts + sex + district. All keys combine identifiers, so blocks stay
  small at national scale (~1 person per DOB + sex + district).
- Comparison vectors (`COMPARISONS`): one small integer level per identifier, computed by
  built-in expressions on the pair's hashes; level 0 is "missing" and weighs nothing.
- EM: the comparison vectors are reduced in Spark to counts per distinct vector (at most
  4 x 5 x 3 x 4 = 240 rows, whatever the population): these counts are the sufficient
  statistics of the model, so every EM iteration runs on them on the driver, exactly as if
  it had aggregated the pairs again, without another pass over the data.
- Two valid NHS numbers that differ are never scored as one person: a Modulus 11 number
  cannot become another valid number by one typo, so such a pair is two people (twins
  with the same DOB, sex and postcode are exactly this case).
- Decision: match weight = log2 prior odds + sum of log2(m/u) per identifier. A record is
  linked to its best person when the weight reaches the threshold and beats the runner-up
  by the same margin; otherwise it stays unlinked (ambiguous when several qualify).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.linkage.blocking import RECORD, REFERENCE, BlockingRule, candidate_pairs
from caredata_spark.linkage.deterministic import agree
from caredata_spark.linkage.settings import LinkageSettings

SCORED = "scored"

BLOCKING_RULES = (
    BlockingRule("nhs_digit_deleted", ("h_nhs_del",), slots=10),
    BlockingRule("dob_sex_district", ("h_dob", "h_sex", "h_district")),
    BlockingRule("dob_swapped_district", ("h_dob", "h_district"), record_columns=("h_dob_swap", "h_district")),
    BlockingRule("dob_ym_sex_district", ("h_dob_ym", "h_sex", "h_district")),
    BlockingRule("dob_yd_sex_district", ("h_dob_yd", "h_sex", "h_district")),
    BlockingRule("dob_md_sex_district", ("h_dob_md", "h_sex", "h_district")),
)


def _present(column: str) -> Column:
    return F.col(RECORD + column).isNotNull() & F.col(REFERENCE + column).isNotNull()


def _nhs_level() -> Column:
    known = {
        side: F.col(side + "h_nhs").isNotNull() | F.col(side + "h_nhs_del").isNotNull()
        for side in (RECORD, REFERENCE)
    }
    one_digit = F.coalesce(
        F.arrays_overlap(F.col(RECORD + "h_nhs_del"), F.col(REFERENCE + "h_nhs_del")), F.lit(False)
    )
    return (
        F.when(~(known[RECORD] & known[REFERENCE]), 0)
        .when(agree("h_nhs"), 3)
        .when(one_digit, 2)
        .otherwise(1)
    )


def _dob_level() -> Column:
    partial = (
        agree("h_dob_ym")
        | agree("h_dob_yd")
        | agree("h_dob_md")
        | F.coalesce(F.col(RECORD + "h_dob_swap") == F.col(REFERENCE + "h_dob"), F.lit(False))
    )
    jan1 = F.coalesce(F.col(RECORD + "dob_jan1"), F.lit(False))
    return (
        F.when(~_present("h_dob"), 0)
        .when(agree("h_dob") & jan1, 3)
        .when(agree("h_dob"), 4)
        .when(partial, 2)
        .otherwise(1)
    )


def _sex_level() -> Column:
    return F.when(~_present("h_sex"), 0).when(agree("h_sex"), 2).otherwise(1)


def _postcode_level() -> Column:
    return (
        F.when(~_present("h_postcode"), 0)
        .when(agree("h_postcode"), 3)
        .when(agree("h_district"), 2)
        .otherwise(1)
    )


@dataclass(frozen=True)
class Comparison:
    """One identifier's agreement levels, worst to best (level 0, missing, is implicit)."""

    name: str
    levels: tuple[str, ...]
    level: Callable[[], Column]


COMPARISONS = (
    Comparison("nhs", ("different", "one_digit", "exact"), _nhs_level),
    # 1 January is the usual default DOB: its agreement is worth less, so EM weighs it apart
    Comparison("dob", ("different", "partial", "exact_jan1", "exact"), _dob_level),
    Comparison("sex", ("different", "same"), _sex_level),
    Comparison("postcode", ("different", "district", "exact"), _postcode_level),
)
LEVEL_COLUMNS = tuple(f"level_{c.name}" for c in COMPARISONS)

Pattern = tuple[int, ...]


def _nhs_contradicted() -> Column:
    return _present("h_nhs") & (F.col(RECORD + "h_nhs") != F.col(REFERENCE + "h_nhs"))


def scored_pairs(records: DataFrame, reference: DataFrame) -> DataFrame:
    """Candidate pairs with one level column per comparison; contradicting NHS pairs dropped."""
    return (
        candidate_pairs(records, reference, BLOCKING_RULES)
        .filter(~_nhs_contradicted())
        .select(
            "signature",
            "person_id",
            "blocking_rule",
            *[c.level().alias(name) for c, name in zip(COMPARISONS, LEVEL_COLUMNS)],
        )
    )


def pattern_counts(pairs: DataFrame) -> list[tuple[str, Pattern, int]]:
    """Pairs per blocking rule and comparison vector: at most 6 x 240 rows, all that is collected."""
    rows = pairs.groupBy("blocking_rule", *LEVEL_COLUMNS).count().collect()
    return [
        (row["blocking_rule"], tuple(int(row[c]) for c in LEVEL_COLUMNS), int(row["count"]))
        for row in rows
    ]


def by_pattern(counts: Sequence[tuple[str, Pattern, int]]) -> list[tuple[Pattern, int]]:
    totals: dict[Pattern, int] = {}
    for _, pattern, n in counts:
        totals[pattern] = totals.get(pattern, 0) + n
    return sorted(totals.items())


def by_rule(counts: Sequence[tuple[str, Pattern, int]]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = {}
    for rule, _, n in counts:
        totals[rule] = totals.get(rule, 0) + n
    return tuple(sorted(totals.items()))


@dataclass(frozen=True)
class MatchModel:
    """m and u per comparison and level (index 0 = level 1), and the prior match share."""

    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    prior: float
    iterations: int = 0

    def level_weights(self) -> list[list[float]]:
        """log2(m/u) per comparison, with 0.0 first for the missing level."""
        return [[0.0, *(math.log2(m / u) for m, u in zip(ms, us))] for ms, us in zip(self.m, self.u)]

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1.0 - self.prior))

    def weight(self, pattern: Pattern) -> float:
        weights = self.level_weights()
        return self.prior_weight + sum(w[level] for w, level in zip(weights, pattern))

    def with_prior(self, prior: float) -> MatchModel:
        return MatchModel(self.m, self.u, prior, self.iterations)

    def weight_column(self) -> Column:
        """The match weight of a pair as a built-in expression over its level columns."""
        total: Column = F.lit(self.prior_weight)
        for name, weights in zip(LEVEL_COLUMNS, self.level_weights()):
            by_level = F.when(F.col(name) == 0, F.lit(0.0))
            for level, weight in enumerate(weights[1:], start=1):
                by_level = by_level.when(F.col(name) == level, F.lit(weight))
            total = total + by_level
        return total


PRIOR_BOUNDS = (1e-9, 1.0 - 1e-9)
PSEUDO_COUNT = 0.5  # per level: keeps unseen levels finite on small data


def _initial_model() -> MatchModel:
    """Matches agree, non-matches do not: EM then labels the agreeing cluster as matches."""

    def normalised(values: Sequence[float]) -> tuple[float, ...]:
        total = sum(values)
        return tuple(v / total for v in values)

    m = tuple(normalised([4.0**k for k in range(len(c.levels))]) for c in COMPARISONS)
    u = tuple(normalised([4.0 ** (len(c.levels) - 1 - k) for k in range(len(c.levels))]) for c in COMPARISONS)
    return MatchModel(m, u, 0.5)


def _posteriors(model: MatchModel, patterns: Sequence[tuple[Pattern, int]]) -> list[float]:
    """P(match | pattern) for each pattern."""
    weights = model.level_weights()
    return [
        1.0 / (1.0 + 2.0 ** -(model.prior_weight + sum(w[lv] for w, lv in zip(weights, p))))
        for p, _ in patterns
    ]


def fit_em(
    patterns: Sequence[tuple[Pattern, int]], max_iterations: int = 200, tolerance: float = 1e-7
) -> MatchModel:
    """Maximum likelihood m, u and prior of a two-class mixture of comparison vectors."""
    model = _initial_model()
    total = sum(n for _, n in patterns)
    for iteration in range(1, max_iterations + 1):
        post = _posteriors(model, patterns)
        matched = [n * p for (_, n), p in zip(patterns, post)]
        unmatched = [n * (1.0 - p) for (_, n), p in zip(patterns, post)]
        m, u = [], []
        for index, comparison in enumerate(COMPARISONS):
            m.append(_level_shares(patterns, matched, index, len(comparison.levels)))
            u.append(_level_shares(patterns, unmatched, index, len(comparison.levels)))
        prior = min(max(sum(matched) / total, PRIOR_BOUNDS[0]), PRIOR_BOUNDS[1])
        updated = MatchModel(tuple(m), tuple(u), prior, iteration)
        change = max(
            abs(prior - model.prior),
            *(abs(a - b) for new, old in ((updated.m, model.m), (updated.u, model.u))
              for xs, ys in zip(new, old) for a, b in zip(xs, ys)),
        )
        model = updated
        if change < tolerance:
            break
    return model


def _level_shares(
    patterns: Sequence[tuple[Pattern, int]], mass: Sequence[float], index: int, levels: int
) -> tuple[float, ...]:
    totals = [PSEUDO_COUNT] * levels
    for (pattern, _), weight in zip(patterns, mass):
        if pattern[index] > 0:
            totals[pattern[index] - 1] += weight
    grand = sum(totals)
    return tuple(t / grand for t in totals)


def fit_prior(
    model: MatchModel,
    patterns: Sequence[tuple[Pattern, int]],
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> MatchModel:
    """EM for the match share alone, m and u held: the prior of another set of pairs.

    m and u describe how identifiers of one person (or of two people) compare, which does
    not change between sets of pairs; the share of true matches does. Pairs left over after
    the deterministic steps hold far fewer matches than the training pairs.
    """
    total = sum(n for _, n in patterns)
    for _ in range(max_iterations):
        post = _posteriors(model, patterns)
        prior = sum(n * p for (_, n), p in zip(patterns, post)) / total
        prior = min(max(prior, PRIOR_BOUNDS[0]), PRIOR_BOUNDS[1])
        done = abs(prior - model.prior) < tolerance
        model = model.with_prior(prior)
        if done:
            break
    return model


def decide(min_weight: float) -> Callable[[DataFrame], DataFrame]:
    """Per record signature: best person, its weight, and the link when it is unambiguous.

    Input: weighted pairs (signature, person_id, match_weight). A person with several
    identities counts once, with its best weight. Output: signature, person_id (null unless
    linked), match_step, match_weight (of the link), best_weight, ambiguous_step.
    """

    def transform(pairs: DataFrame) -> DataFrame:
        per_person = pairs.groupBy("signature", "person_id").agg(
            F.max("match_weight").alias("match_weight")
        )
        ranked = per_person.groupBy("signature").agg(
            F.sort_array(F.collect_list(F.struct("match_weight", "person_id")), asc=False).alias(
                "ranked"
            ),
            F.count_if(F.col("match_weight") >= min_weight).alias("qualifying"),
        )
        best = F.col("ranked")[0]
        runner_up = F.try_element_at(F.col("ranked"), F.lit(2))
        clear = F.coalesce(best["match_weight"] - runner_up["match_weight"] >= min_weight, F.lit(True))
        linked = (F.col("qualifying") == 1) & clear
        return ranked.select(
            "signature",
            F.when(linked, best["person_id"]).alias("person_id"),
            F.when(linked, F.lit(SCORED)).alias("match_step"),
            F.when(linked, best["match_weight"]).alias("match_weight"),
            best["match_weight"].alias("best_weight"),
            F.when((F.col("qualifying") >= 1) & ~linked, F.lit(SCORED)).alias("ambiguous_step"),
        )

    return transform


SAMPLE_BUCKETS = 1_000_000
SCORED_DDL = (
    "signature binary, person_id string, match_step string, match_weight double, "
    "best_weight double, ambiguous_step string"
)


@dataclass(frozen=True)
class ScoredFit:
    """What the scored step estimated and saw, for the report (parameters, never data)."""

    model: MatchModel | None
    min_weight: float
    training_pairs: int = 0
    residue_pairs: int = 0
    pairs_per_rule: tuple[tuple[str, int], ...] = ()
    training_prior: float | None = None

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "training_pairs": self.training_pairs,
            "residue_pairs": self.residue_pairs,
            "threshold_weight": round(self.min_weight, 3),
        }
        if self.model is not None:
            figures["em_iterations"] = self.model.iterations
            figures["training_prior"] = self.training_prior
            figures["residue_prior"] = self.model.prior
        return figures


def em_sample(signatures: DataFrame, available: int, target: int) -> DataFrame:
    """About `target` of `available` signatures, chosen by hash: the same on every re-run."""
    if available <= target:
        return signatures
    buckets = int(SAMPLE_BUCKETS * target / available)
    return signatures.filter(F.pmod(F.xxhash64("signature"), F.lit(SAMPLE_BUCKETS)) < buckets)


def link_scored(
    to_link: DataFrame,
    residue: DataFrame,
    reference: DataFrame,
    settings: LinkageSettings,
    available: int,
) -> tuple[DataFrame, ScoredFit]:
    """Fit m/u by EM on a sample of all signatures, then score the residue against persons.

    m/u are learnt on candidate pairs of signatures the rules can link too, where matches
    are plentiful; the prior is then re-fitted on the residue's own pairs. Returns, per
    residue signature with candidates, the `decide` columns. `available` bounds the number
    of signatures in `to_link` (their records' count will do: no extra pass to count them).
    """
    empty = to_link.sparkSession.createDataFrame([], SCORED_DDL)
    sample = em_sample(to_link, available, settings.em_sample_signatures)
    training = by_pattern(pattern_counts(scored_pairs(sample, reference)))
    if not training:
        return empty, ScoredFit(None, settings.min_weight)
    model = fit_em(training, settings.em_max_iterations, settings.em_tolerance)
    pairs = scored_pairs(residue, reference)
    residue_counts = pattern_counts(pairs)
    fit = ScoredFit(
        None,
        settings.min_weight,
        training_pairs=sum(n for _, n in training),
        residue_pairs=sum(n for _, _, n in residue_counts),
        pairs_per_rule=by_rule(residue_counts),
        training_prior=model.prior,
    )
    if not residue_counts:
        return empty, replace(fit, model=model)
    model = fit_prior(model, by_pattern(residue_counts), settings.em_max_iterations, settings.em_tolerance)
    weighted = pairs.withColumn("match_weight", model.weight_column())
    return weighted.transform(decide(settings.min_weight)), replace(fit, model=model)
