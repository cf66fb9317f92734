"""The CPRD-HES deterministic algorithm: 8 steps in order, on identifier hashes.

A record is tried against step 1, then 2, ... and is linked by the first step that it
satisfies with exactly ONE person; when a step is satisfied by two or more persons the
record is not linked by it (it is `ambiguous` there) and goes on to the next step.

Rather than 8 joins on a shrinking remainder, every (record, person) candidate pair is
built once (two blocking keys, one join: the NHS number, or sex + DOB + postcode), each pair
is tested against all 8 steps with built-in expressions, and one aggregation per record
collects, per step, the set of persons satisfying it. The first step with a set of size one
is the link. This gives exactly the stepwise result, because a step's outcome for a record
depends only on the persons satisfying it, and costs one shuffle join + one aggregation.
Every step requires one of the two blocking keys (asserted in the tests), so no pair a step
could accept is missed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark.linkage.blocking import RECORD, REFERENCE, BlockingRule, candidate_pairs, keys_per_record

BLOCKING_RULES = (
    BlockingRule("nhs", ("h_nhs",)),
    # steps 6 and 7 distrust 1 January: such DOBs never make a key (nor a hot partition)
    BlockingRule("sex_dob_postcode", ("h_sex", "h_dob", "h_postcode"), skip_if="dob_jan1"),
)
KEYS_PER_SIGNATURE = keys_per_record(BLOCKING_RULES)


def agree(column: str) -> Column:
    """Both hashes present and equal (a missing identifier never agrees)."""
    return F.coalesce(F.col(RECORD + column) == F.col(REFERENCE + column), F.lit(False))


def _dob_swapped() -> Column:
    return F.coalesce(F.col(RECORD + "h_dob_swap") == F.col(REFERENCE + "h_dob"), F.lit(False))


CRITERIA: dict[str, Callable[[], Column]] = {
    "nhs": lambda: agree("h_nhs"),
    "sex": lambda: agree("h_sex"),
    "dob": lambda: agree("h_dob"),
    "postcode": lambda: agree("h_postcode"),
    # any two of year, month and day agree, or the DOB agrees with day and month swapped
    "partial_dob": lambda: (
        agree("h_dob_ym") | agree("h_dob_yd") | agree("h_dob_md") | _dob_swapped()
    ),
    "nhs_not_contradicted": lambda: (
        F.col(RECORD + "h_nhs").isNull()
        | F.col(REFERENCE + "h_nhs").isNull()
        | (F.col(RECORD + "h_nhs") == F.col(REFERENCE + "h_nhs"))
    ),
    "dob_not_jan1": lambda: ~F.coalesce(F.col(RECORD + "dob_jan1"), F.lit(True)),
    "not_communal": lambda: ~(
        F.coalesce(F.col(RECORD + "communal"), F.lit(False))
        | F.coalesce(F.col(REFERENCE + "communal"), F.lit(False))
    ),
}

# Padmanabhan et al. 2019 (shared/reference/linkage.md), in rank order
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("det_1", ("nhs", "sex", "dob", "postcode")),
    ("det_2", ("nhs", "sex", "dob")),
    ("det_3", ("nhs", "sex", "postcode", "partial_dob")),
    ("det_4", ("nhs", "sex", "partial_dob")),
    ("det_5", ("nhs", "postcode")),
    ("det_6", ("sex", "dob", "postcode", "nhs_not_contradicted", "dob_not_jan1", "not_communal")),
    ("det_7", ("sex", "dob", "postcode", "nhs_not_contradicted", "dob_not_jan1")),
    ("det_8", ("nhs",)),
)


def step_condition(criteria: tuple[str, ...]) -> Column:
    return reduce(operator.and_, [CRITERIA[name]() for name in criteria])


def link_deterministic(records: DataFrame, reference: DataFrame, broadcast_records: bool = False) -> DataFrame:
    """Per record signature with any candidate: the step and person that link it, if any.

    `records`: signature + identity hashes; `reference`: the person index (person_id,
    signature + identity hashes), possibly several identities per person. Result columns:
    signature, person_id (null when no step linked), match_step, ambiguous_step (the first
    step, before the linking one, that two or more persons satisfied). `broadcast_records`:
    as in `blocking.candidate_pairs`, for a record side known to be small.
    """
    pairs = candidate_pairs(records, reference, BLOCKING_RULES, broadcast_records)
    persons_per_step = pairs.groupBy("signature").agg(
        *[
            F.collect_set(F.when(step_condition(criteria), F.col("person_id"))).alias(name)
            for name, criteria in STEPS
        ]
    )
    unique = {name: F.size(F.col(name)) == 1 for name, _ in STEPS}
    linked_by = F.coalesce(*[F.when(unique[name], F.lit(name)) for name, _ in STEPS])
    person = F.coalesce(*[F.when(unique[name], F.col(name)[0]) for name, _ in STEPS])
    return persons_per_step.select(
        "signature",
        person.alias("person_id"),
        linked_by.alias("match_step"),
        _first_ambiguous_step(unique).alias("ambiguous_step"),
    )


def _first_ambiguous_step(unique: dict[str, Column]) -> Column:
    """First step satisfied by several persons while no earlier step had linked the record."""
    not_yet_linked = F.lit(True)
    ambiguous = []
    for name, _ in STEPS:
        ambiguous.append(F.when(not_yet_linked & (F.size(F.col(name)) > 1), F.lit(name)))
        not_yet_linked = not_yet_linked & ~unique[name]
    return F.coalesce(*ambiguous)
