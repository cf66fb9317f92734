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

"The NHS number does not contradict" (steps 6/7) is a question about the person, not about
the one identity a pair holds: a person with an identity without a number (a GP extract, an
old registration) may hold another number elsewhere in the index, and a record carrying a
valid number that is not among the person's is someone else (a twin). So each pair is
checked against every valid number its person holds (`person_numbers`, one row per
numbered person), joined on the pairs once they are narrowed to their step flags.
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
    # per identity here (cheap, before the join); per person in `link_deterministic`
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


PERSON_NUMBERS = "person_nhs"


def step_condition(criteria: tuple[str, ...]) -> Column:
    return reduce(operator.and_, [CRITERIA[name]() for name in criteria])


def person_numbers(reference: DataFrame) -> DataFrame:
    """(person_id, person_nhs): every valid NHS number hash each person holds, in any of its
    identities; persons holding none have no row. Per person, so it is joined, never
    broadcast: it grows with the population."""
    return (
        reference.filter(F.col("h_nhs").isNotNull())
        .groupBy("person_id")
        .agg(F.collect_set("h_nhs").alias(PERSON_NUMBERS))
    )


def person_contradicts() -> Column:
    """On a pair carrying the record's `l_h_nhs` and its person's `person_nhs`: the record's
    valid number is not among those the person holds, so they are two people."""
    record = F.col(RECORD + "h_nhs")
    return record.isNotNull() & F.coalesce(~F.array_contains(F.col(PERSON_NUMBERS), record), F.lit(False))


def with_person_numbers(pairs: DataFrame, numbers: DataFrame) -> DataFrame:
    """Pairs with their person's numbers (null for a person holding none)."""
    return pairs.join(numbers, on="person_id", how="left")


def link_deterministic(
    records: DataFrame,
    reference: DataFrame,
    broadcast_records: bool = False,
    numbers: DataFrame | None = None,
) -> DataFrame:
    """Per record signature with any candidate: the step and person that link it, if any.

    `records`: signature + identity hashes; `reference`: the person index (person_id,
    signature + identity hashes), possibly several identities per person. Result columns:
    signature, person_id (null when no step linked), match_step, ambiguous_step (the first
    step, before the linking one, that two or more persons satisfied). `broadcast_records`:
    as in `blocking.candidate_pairs`, for a record side known to be small. `numbers`:
    `person_numbers(reference)`, when the caller has it already.
    """
    numbers = person_numbers(reference) if numbers is None else numbers
    pairs = candidate_pairs(records, reference, BLOCKING_RULES, broadcast_records)
    # narrowed to the step flags before the join on the person: no identity columns shuffled
    flags = pairs.select(
        "signature",
        "person_id",
        RECORD + "h_nhs",
        *[step_condition(criteria).alias(name) for name, criteria in STEPS],
    )
    checked = with_person_numbers(flags, numbers)
    persons_per_step = checked.groupBy("signature").agg(
        *[
            F.collect_set(F.when(_per_person(name, criteria), F.col("person_id"))).alias(name)
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


def _per_person(step: str, criteria: tuple[str, ...]) -> Column:
    """A checked pair satisfies `step`: its flag, and no contradiction by the person's numbers."""
    if "nhs_not_contradicted" in criteria:
        return F.col(step) & ~person_contradicts()
    return F.col(step)


def _first_ambiguous_step(unique: dict[str, Column]) -> Column:
    """First step satisfied by several persons while no earlier step had linked the record."""
    not_yet_linked = F.lit(True)
    ambiguous = []
    for name, _ in STEPS:
        ambiguous.append(F.when(not_yet_linked & (F.size(F.col(name)) > 1), F.lit(name)))
        not_yet_linked = not_yet_linked & ~unique[name]
    return F.coalesce(*ambiguous)
