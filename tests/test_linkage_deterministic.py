"""The 8 CPRD-HES steps on hand-made hashes: each step, order, ambiguity, placeholders, twins."""

from __future__ import annotations

from chispa import assert_df_equality
from linkage_data import (
    ALICE,
    BOB,
    JAN1,
    NO_NHS_1,
    PERSONS,
    TWIN_1,
    TWIN_2,
    Ids,
    reference,
    signatures,
)
from pyspark.sql import DataFrame, SparkSession

from caredata_spark.linkage.deterministic import BLOCKING_RULES, STEPS, link_deterministic

RESULT_DDL = "signature binary, person_id string, match_step string, ambiguous_step string"


def linked(spark: SparkSession, records: dict[str, Ids]) -> DataFrame:
    return link_deterministic(signatures(spark, records), reference(spark, PERSONS))


def expected(spark: SparkSession, rows: list[tuple[str, str | None, str | None, str | None]]) -> DataFrame:
    return spark.createDataFrame([(k.encode(), p, s, a) for k, p, s, a in rows], RESULT_DDL)


def test_each_step_links_what_it_should_and_no_earlier_step_does(spark: SparkSession) -> None:
    records = {
        "s1": ALICE,
        "s2": ALICE.but(postcode="LS9 9ZZ"),
        "s3": ALICE.but(dob="1980-03-17"),  # year + month agree
        "s3_swapped": BOB.but(dob="1950-02-07"),  # day and month swapped
        "s4": ALICE.but(dob="1981-03-14", postcode="LS9 9ZZ"),  # month + day agree
        "s5": ALICE.but(sex="1", dob="1999-12-30"),
        "s6": BOB.but(nhs=None),
        "s7": BOB.but(nhs=None, postcode="LS2 7XY", communal=True),
        "s8": BOB.but(sex="2", dob="2001-09-09", postcode="W1A 1AA"),
        "old_address": ALICE.but(nhs=None, postcode="LS6 2QQ"),
    }

    actual = linked(spark, records)

    assert_df_equality(
        actual,
        expected(
            spark,
            [
                ("s1", "alice", "det_1", None),
                ("s2", "alice", "det_2", None),
                ("s3", "alice", "det_3", None),
                ("s3_swapped", "bob", "det_3", None),
                ("s4", "alice", "det_4", None),
                ("s5", "alice", "det_5", None),
                ("s6", "bob", "det_6", None),
                ("s7", "bob", "det_7", None),
                ("s8", "bob", "det_8", None),
                ("old_address", "alice", "det_6", None),
            ],
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_several_persons_at_a_step_link_nobody_there(spark: SparkSession) -> None:
    """Twins and look-alikes: not linked by the ambiguous step, maybe by a later one."""
    records = {
        "twin_without_nhs": TWIN_1.but(nhs=None),
        "lookalike": NO_NHS_1,
        # NHS says bob; sex + DOB + postcode fit two persons without NHS: det_6/7 are
        # ambiguous, det_8 links by the NHS number
        "bob_at_their_address": NO_NHS_1.but(nhs=BOB.nhs),
    }

    actual = linked(spark, records)

    assert_df_equality(
        actual,
        expected(
            spark,
            [
                ("twin_without_nhs", None, None, "det_6"),
                ("lookalike", None, None, "det_6"),
                ("bob_at_their_address", "bob", "det_8", "det_6"),
            ],
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_twins_are_never_merged(spark: SparkSession) -> None:
    actual = linked(spark, {"t1": TWIN_1, "t2": TWIN_2, "t1_moved": TWIN_1.but(postcode="M2 2BB")})

    assert_df_equality(
        actual,
        expected(
            spark,
            [("t1", "twin1", "det_1", None), ("t2", "twin2", "det_1", None), ("t1_moved", "twin1", "det_2", None)],
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_a_number_the_person_holds_in_another_identity_contradicts(spark: SparkSession) -> None:
    """Steps 6/7 judge the NHS number per person: twin A's registration lacks a number in one
    extract and holds hers in another; twin B's record (her own number, the same DOB, sex
    and postcode) must not link to A through the identity without a number."""
    index = reference(spark, {"twin_a": [TWIN_1.but(nhs=None), TWIN_1]})
    records = {"twin_b": TWIN_2, "twin_a_without_nhs": TWIN_1.but(nhs=None), "twin_a": TWIN_1}

    actual = link_deterministic(signatures(spark, records), index)

    assert_df_equality(
        actual,
        expected(
            spark,
            [("twin_b", None, None, None), ("twin_a_without_nhs", "twin_a", "det_6", None), ("twin_a", "twin_a", "det_1", None)],
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_rules_distrust_1_january_communal_addresses_and_contradicting_nhs(spark: SparkSession) -> None:
    records = {
        "jan1_without_nhs": JAN1.but(nhs=None),  # steps 6/7 distrust 1 January: no candidate at all
        "other_nhs_same_details": BOB.but(nhs="9434765919", sex="1"),  # contradicts bob's NHS
    }

    actual = linked(spark, records)

    # the NHS number belongs to alice, but nothing else agrees: det_8 links by NHS alone
    assert_df_equality(
        actual,
        expected(spark, [("other_nhs_same_details", "alice", "det_8", None)]),
        ignore_nullable=True,
    )


def test_placeholders_never_link(spark: SparkSession) -> None:
    """Missing and placeholder identifiers arrive as null hashes: no key, no candidate."""
    records = {
        "nothing": Ids(),
        "sex_dob_only": ALICE.but(nhs=None, postcode=None),
        "dob_postcode_no_sex": ALICE.but(nhs=None, sex=None),
    }

    assert linked(spark, records).count() == 0


def test_every_step_needs_a_blocking_key() -> None:
    """A step's pairs must all be found by the one join: each step implies a blocking rule."""
    keys = {rule.name: set() for rule in BLOCKING_RULES}
    keys["nhs"] = {"nhs"}
    keys["sex_dob_postcode"] = {"sex", "dob", "postcode", "dob_not_jan1"}
    for name, criteria in STEPS:
        assert any(required <= set(criteria) for required in keys.values()), name
    assert [name for name, _ in STEPS] == [f"det_{i}" for i in range(1, 9)]


def test_null_keys_never_reach_the_join(spark: SparkSession) -> None:
    plan = linked(spark, {"nothing": Ids()})._jdf.queryExecution().optimizedPlan().toString()
    assert plan.count("isnotnull(block_key") >= 2  # both sides filter before the join
