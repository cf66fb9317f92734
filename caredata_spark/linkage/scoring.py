"""The scored step: a Fellegi-Sunter model whose m/u probabilities are estimated as Splink does.

It recovers links the rules miss (one mistyped NHS digit, day/month swapped, a DOB digit
wrong, a stale postcode) while staying on hashes.

- Blocking (`BLOCKING_RULES`): the NHS number with one digit deleted (10 keys: a number
  with one wrong digit still shares 9), DOB + sex + postcode district, swapped DOB +
  district, and two-of-three DOB parts + sex + district. Every key combines identifiers,
  so blocks stay small at national scale (about one person per DOB + sex + district).
- Comparison vectors (`COMPARISONS`): one small integer level per identifier, computed by
  built-in expressions on the pair's hashes; level 0 means missing and weighs nothing.
- Estimation, without labels: u (how often two different people agree) from random pairs;
  m (how often one person's records agree) by EM with u held, in training sessions
  blocked on one identifier, that identifier left out of its own session (its agreement
  was forced by the blocking); the prior is one match per record among the persons.
  Pairs are reduced in Spark to counts per comparison vector (at most 4 x 5 x 3 x 4 = 240
  rows, whatever the population): these are the sufficient statistics of the model, so
  the EM iterations run on them on the driver exactly as if they re-aggregated the pairs.
- Reuse: m and u are kept in `linkage/report`; later runs reuse them (with the prior of
  their own person index) until `linkage.refit_every_runs` runs have passed, so a monthly
  run neither re-estimates from one month's records nor draws training pairs against the
  whole person index again. An estimate from less than a full sample is re-estimated by
  the next run.
- Two valid NHS numbers that differ are never scored as one person: a Modulus 11 number
  cannot become another valid number by one typo, so such a pair is two people (twins
  with the same DOB, sex and postcode are exactly this case). This is judged per person,
  against every number the person holds: a person whose best identity lacks a number
  but who holds another one elsewhere is still someone else.
- Decision: match weight = log2 prior odds + sum of log2(m/u) per identifier. A record is
  linked to its best person when the weight reaches the threshold and beats the runner-up
  by the same margin; otherwise it stays unlinked (ambiguous when several qualify).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.linkage.blocking import RECORD, REFERENCE, BlockingRule, candidate_pairs, keys_per_record
from caredata_spark.linkage.deterministic import agree, person_contradicts, person_numbers, with_person_numbers
from caredata_spark.linkage.records import IDENTITY_COLUMNS
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
KEYS_PER_SIGNATURE = keys_per_record(BLOCKING_RULES)


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


def compared(pairs: DataFrame) -> DataFrame:
    """Add one level column per comparison to candidate pairs."""
    return pairs.select(
        "*", *[c.level().alias(name) for c, name in zip(COMPARISONS, LEVEL_COLUMNS)]
    )


def scored_pairs(
    records: DataFrame,
    reference: DataFrame,
    broadcast_records: bool = False,
    numbers: DataFrame | None = None,
) -> DataFrame:
    """Candidate pairs of the scored step, compared; pairs of a record and a person holding
    different valid NHS numbers dropped: first per identity (before the join), then against
    all the person's numbers (`numbers`: `person_numbers(reference)`, if the caller has it),
    so `decide`, which keeps a person's best identity, never sees a contradicted person."""
    numbers = person_numbers(reference) if numbers is None else numbers
    pairs = candidate_pairs(records, reference, BLOCKING_RULES, broadcast_records)
    levels = compared(pairs.filter(~_nhs_contradicted())).select(
        "signature", "person_id", "blocking_rule", RECORD + "h_nhs", *LEVEL_COLUMNS
    )
    return (
        with_person_numbers(levels, numbers)
        .filter(~person_contradicts())
        .select("signature", "person_id", "blocking_rule", *LEVEL_COLUMNS)
    )


def random_pairs(
    records: DataFrame,
    reference: DataFrame,
    sizes: int,
    target: int,
    known: DataFrame,
    broadcast_records: bool = False,
) -> DataFrame:
    """About `target` of the `sizes` (record, reference identity) pairs, drawn by hash,
    without the `known` links (signature, person_id): non-matches, to estimate u from.

    A random pair is a match with probability ~1/persons, but for the agreements only a
    match shows (an equal NHS number) that is all there is to see: left in, those pairs
    would make u ~ m/persons and cancel the prior. Both sides get a bucket from a hash of
    their signature and are joined on it, so pairs number sizes / buckets, no cartesian
    product. `broadcast_records`: as in `candidate_pairs`, for a small sample.
    """
    buckets = max(1, sizes // max(target, 1))

    def bucketed(frame: DataFrame, ids: Sequence[Column], prefix: str) -> DataFrame:
        bucket = F.pmod(F.xxhash64(F.lit("random pairs"), F.col("signature")), F.lit(buckets))
        return frame.select(bucket.alias("bucket"), *ids, *[F.col(c).alias(prefix + c) for c in IDENTITY_COLUMNS])

    sample = bucketed(records, [F.col("signature")], RECORD)
    pairs = (F.broadcast(sample) if broadcast_records else sample).join(
        bucketed(reference, [F.col("person_id")], REFERENCE), on="bucket", how="inner"
    )
    unknown = pairs.join(known, on=["signature", "person_id"], how="left_anti")
    return compared(unknown).select(*LEVEL_COLUMNS)


def pattern_counts(pairs: DataFrame) -> list[tuple[Pattern, int]]:
    """Pairs per comparison vector: at most 240 rows, the only thing collected."""
    rows = pairs.groupBy(*LEVEL_COLUMNS).count().collect()
    return sorted((tuple(int(row[c]) for c in LEVEL_COLUMNS), int(row["count"])) for row in rows)


@dataclass(frozen=True)
class MatchModel:
    """m and u per comparison and level (index 0 = level 1), and the prior match share."""

    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    prior: float

    def level_weights(self) -> list[list[float]]:
        """log2(m/u) per comparison, with 0.0 first for the missing level."""
        return [[0.0, *(math.log2(m / u) for m, u in zip(ms, us))] for ms, us in zip(self.m, self.u)]

    @classmethod
    def among(cls, m: tuple[tuple[float, ...], ...], u: tuple[tuple[float, ...], ...], persons: int) -> MatchModel:
        """The model whose prior is one match among `persons` (a record is one person at most)."""
        return cls(m, u, 1.0 / (persons + 1))

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1.0 - self.prior))

    def weight(self, pattern: Pattern) -> float:
        weights = self.level_weights()
        return self.prior_weight + sum(w[level] for w, level in zip(weights, pattern))

    def weight_column(self) -> Column:
        """The match weight of a pair as a built-in expression over its level columns."""
        total: Column = F.lit(self.prior_weight)
        for name, weights in zip(LEVEL_COLUMNS, self.level_weights()):
            by_level = F.when(F.col(name) == 0, F.lit(0.0))
            for level, weight in enumerate(weights[1:], start=1):
                by_level = by_level.when(F.col(name) == level, F.lit(weight))
            total = total + by_level
        return total


PRIOR_BOUNDS = (1e-12, 1.0 - 1e-12)
PSEUDO_COUNT = 0.5  # per level: an agreement never seen is rare, not impossible


def level_shares(patterns: Sequence[tuple[Pattern, float]], index: int) -> tuple[float, ...]:
    """Share of each level of comparison `index` among patterns where it is not missing."""
    totals = [PSEUDO_COUNT] * len(COMPARISONS[index].levels)
    for pattern, mass in patterns:
        if pattern[index] > 0:
            totals[pattern[index] - 1] += mass
    grand = sum(totals)
    return tuple(t / grand for t in totals)


def estimate_u(random_patterns: Sequence[tuple[Pattern, int]]) -> tuple[tuple[float, ...], ...]:
    """u from random pairs, where matches are a negligible 1 in (number of persons)."""
    return tuple(level_shares(random_patterns, index) for index in range(len(COMPARISONS)))


def initial_m() -> list[tuple[float, ...]]:
    """Records of one person mostly agree: best level most likely."""
    shapes = [[4.0**k for k in range(len(c.levels))] for c in COMPARISONS]
    return [tuple(v / sum(shape) for v in shape) for shape in shapes]


@dataclass(frozen=True)
class Session:
    """EM over one training blocking rule's pairs: m of `estimated`, match share `prior`."""

    m: tuple[tuple[float, ...], ...]
    prior: float
    iterations: int


def fit_m(
    patterns: Sequence[tuple[Pattern, int]],
    u: Sequence[Sequence[float]],
    estimated: Sequence[int],
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> Session:
    """EM for m (of the comparisons `estimated`) and the match share, u held fixed.

    Comparisons not estimated are left out of the likelihood: in a session blocked on an
    identifier, agreement on it says nothing about match status.
    """
    m = initial_m()
    prior = 0.5
    total = sum(n for _, n in patterns)
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        matched = []
        for pattern, n in patterns:
            log_ratio = math.log2(prior / (1.0 - prior)) + sum(
                math.log2(m[c][pattern[c] - 1] / u[c][pattern[c] - 1])
                for c in estimated
                if pattern[c] > 0
            )
            matched.append((pattern, n / (1.0 + 2.0 ** -max(min(log_ratio, 1000.0), -1000.0))))
        new_m = list(m)
        for c in estimated:
            new_m[c] = level_shares(matched, c)
        new_prior = min(max(sum(mass for _, mass in matched) / total, PRIOR_BOUNDS[0]), PRIOR_BOUNDS[1])
        change = max(
            abs(new_prior - prior),
            *(abs(a - b) for c in estimated for a, b in zip(new_m[c], m[c])),
        )
        m, prior = new_m, new_prior
        if change < tolerance:
            break
    return Session(tuple(m), prior, iteration)


# (blocking rule, comparisons EM estimates in it, comparisons whose m it provides)
TRAINING_SESSIONS: tuple[tuple[BlockingRule, tuple[str, ...], tuple[str, ...]], ...] = (
    (BlockingRule("train_nhs", ("h_nhs",)), ("dob", "sex", "postcode"), ("dob", "sex", "postcode")),
    (BlockingRule("train_postcode", ("h_postcode",)), ("nhs", "dob", "sex"), ("nhs",)),
)


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
class FittedParameters:
    """m and u as the EM of run `run` estimated them from `signatures` sampled signatures
    (kept in `linkage/report`)."""

    run: int
    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    signatures: int

    def reusable(self, run: int, settings: LinkageSettings) -> bool:
        """Whether run `run` reuses these rather than estimating its own: only within
        `refit_every_runs` of the estimate, and only an estimate from a full sample (a first
        run of a few pilot submissions must not set the weights for a year)."""
        full = self.signatures >= settings.em_sample_signatures
        return full and run - self.run < settings.refit_every_runs


@dataclass(frozen=True)
class ScoredFit:
    """What the scored step estimated and from how much, for the report (never data).

    `fitted_run`: the run whose EM estimated the model's m and u (this run, or the earlier
    one it reused them from), from `fitted_signatures` sampled signatures; `sessions` and
    `random_pairs` are empty when reused.
    """

    model: MatchModel | None
    min_weight: float
    random_pairs: int = 0
    sessions: tuple[tuple[str, int, Session], ...] = ()  # (rule, pairs, fit)
    fitted_run: int | None = None
    fitted_signatures: int = 0

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {"random_pairs": self.random_pairs, "threshold_weight": round(self.min_weight, 3)}
        for rule, pairs, session in self.sessions:
            figures[f"{rule}_pairs"] = pairs
            figures[f"{rule}_iterations"] = session.iterations
        if self.model is not None:
            figures["prior_weight"] = round(self.model.prior_weight, 3)
            figures["model_run"] = self.fitted_run
            figures["model_signatures"] = self.fitted_signatures
        return figures


def sample_signatures(signatures: DataFrame, available: int, target: int) -> DataFrame:
    """About `target` of the `available` signatures, chosen by hash: the same on every re-run."""
    if available <= target:
        return signatures
    buckets = int(SAMPLE_BUCKETS * target / available)
    return signatures.filter(F.pmod(F.xxhash64("signature"), F.lit(SAMPLE_BUCKETS)) < buckets)


def train(
    to_link: DataFrame,
    available: int,
    reference: DataFrame,
    known: DataFrame,
    settings: LinkageSettings,
    run: int,
) -> ScoredFit:
    """u from random pairs, m by EM sessions, prior = one match among the persons.

    `available`: the number of signatures in `to_link`. `known`: (signature, person_id)
    links already made (by the rules), kept out of u. Only counts per comparison vector
    reach the driver (one small collect per session). The sample has one key per
    training rule: within the broadcast limit, it is broadcast and the person index
    streams past it, instead of being shuffled for each session.
    """
    reference_rows, persons = reference.agg(F.count(F.lit(1)), F.count_distinct("person_id")).first()
    if not persons:
        return ScoredFit(None, settings.min_weight)
    sample = sample_signatures(to_link, available, settings.em_sample_signatures)
    sample_size = min(available, settings.em_sample_signatures)
    small = settings.broadcasts(sample_size)  # one key per training rule
    random = pattern_counts(
        random_pairs(sample, reference, sample_size * reference_rows, settings.u_sample_pairs, known, small)
    )
    u = estimate_u(random)
    m = initial_m()
    sessions = []
    names = [c.name for c in COMPARISONS]
    for rule, estimated, provided in TRAINING_SESSIONS:
        counts = pattern_counts(compared(candidate_pairs(sample, reference, [rule], small)))
        if not counts:
            continue  # nothing to learn from: the initial m stands for what it provides
        session = fit_m(
            counts, u, [names.index(c) for c in estimated], settings.em_max_iterations, settings.em_tolerance
        )
        for name in provided:
            m[names.index(name)] = session.m[names.index(name)]
        sessions.append((rule.name, sum(n for _, n in counts), session))
    model = MatchModel.among(tuple(m), u, persons)
    return ScoredFit(model, settings.min_weight, sum(n for _, n in random), tuple(sessions), run, sample_size)


def reused(earlier: FittedParameters, reference: DataFrame, settings: LinkageSettings) -> ScoredFit:
    """`earlier`'s m and u; the prior, one match among the persons, from today's index."""
    persons = reference.agg(F.count_distinct("person_id")).first()[0]
    if not persons:
        return ScoredFit(None, settings.min_weight)
    model = MatchModel.among(earlier.m, earlier.u, persons)
    return ScoredFit(model, settings.min_weight, fitted_run=earlier.run, fitted_signatures=earlier.signatures)


def link_scored(
    to_link: DataFrame,
    known: DataFrame,
    reference: DataFrame,
    settings: LinkageSettings,
    run: int = 1,
    earlier: FittedParameters | None = None,
    numbers: DataFrame | None = None,
) -> tuple[DataFrame, ScoredFit]:
    """Train on (a sample of) all signatures to link, then score the residue against persons.

    `known`: the signatures the rules linked, with their person; the rest is the residue.
    Training uses every signature, not only the residue: the rules' easy links are where
    most matches are, and m describes matches. `earlier`: the latest m and u an earlier run
    estimated, reused instead of training when `FittedParameters.reusable`. `numbers`: as
    in `scored_pairs`. Returns, per residue signature with candidates, the `decide` columns.
    """
    signatures = to_link.count()
    if not signatures:
        fit = ScoredFit(None, settings.min_weight)
    elif earlier is not None and earlier.reusable(run, settings):
        fit = reused(earlier, reference, settings)
    else:
        fit = train(to_link, signatures, reference, known, settings, run)
    if fit.model is None:
        return to_link.sparkSession.createDataFrame([], SCORED_DDL), fit
    residue = to_link.join(known.select("signature"), on="signature", how="left_anti")
    # the rules link most signatures: when the residue's keys are few, broadcast them.
    # `known` holds distinct signatures of `to_link`, so the residue is counted from the two
    # (cheap scans of materialised frames) instead of running the anti-join twice
    residue_signatures = signatures - known.count()
    small = settings.broadcasts(residue_signatures * KEYS_PER_SIGNATURE)
    weighted = scored_pairs(residue, reference, broadcast_records=small, numbers=numbers).withColumn(
        "match_weight", fit.model.weight_column()
    )
    return weighted.transform(decide(settings.min_weight)), fit
