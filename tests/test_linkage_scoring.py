"""The scored step: EM recovers m/u, comparison levels on hashes, the decision rule, and
an end-to-end scored run that links typos and never links twins."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import pytest
from chispa import assert_df_equality
from linkage_data import ALICE, BOB, JAN1, PERSONS, TWIN_1, TWIN_2, Ids, reference, signatures
from pyspark.sql import DataFrame, SparkSession

from caredata_spark.config import ConfigError
from caredata_spark.linkage.deterministic import link_deterministic
from caredata_spark.linkage.scoring import (
    COMPARISONS,
    LEVEL_COLUMNS,
    FittedParameters,
    MatchModel,
    ScoredFit,
    decide,
    estimate_u,
    fit_m,
    initial_m,
    link_scored,
    scored_pairs,
)
from caredata_spark.linkage.settings import LinkageSettings, linkage_settings

TRUE_M = ((0.01, 0.04, 0.95), (0.02, 0.05, 0.03, 0.90), (0.01, 0.99), (0.15, 0.15, 0.70))
TRUE_U = ((0.97, 0.0005, 0.0295), (0.80, 0.15, 0.01, 0.04), (0.5, 0.5), (0.85, 0.12, 0.03))


def expected_patterns(prior: float, total: float, missing: float = 0.0) -> list[tuple[tuple[int, ...], int]]:
    """Expected pair counts per comparison vector under TRUE_M/TRUE_U (levels 1..n, or 0)."""
    choices = [range(0 if missing else 1, len(c.levels) + 1) for c in COMPARISONS]
    patterns = []
    for pattern in itertools.product(*choices):
        m = u = 1.0
        for index, level in enumerate(pattern):
            if level == 0:
                m, u = m * missing, u * missing
            else:
                keep = 1.0 - missing if missing else 1.0
                m, u = m * keep * TRUE_M[index][level - 1], u * keep * TRUE_U[index][level - 1]
        count = round(total * (prior * m + (1 - prior) * u))
        if count:
            patterns.append((pattern, count))
    return patterns


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_em_recovers_m_and_match_share_with_u_held(missing: float) -> None:
    session = fit_m(
        expected_patterns(prior=0.3, total=5e7, missing=missing),
        TRUE_U,
        estimated=range(len(COMPARISONS)),
        max_iterations=1000,
        tolerance=1e-10,
    )

    assert session.prior == pytest.approx(0.3, abs=0.002)
    for fitted, true in zip(session.m, TRUE_M):
        assert fitted == pytest.approx(true, abs=0.005)


def test_a_session_leaves_its_blocked_comparison_alone() -> None:
    """Blocked on NHS, every pair agrees on it: EM must learn nothing about it there."""
    blocked = [(p, n) for p, n in expected_patterns(prior=0.3, total=5e7) if p[0] == 3]
    nhs, others = 0, [1, 2, 3]

    session = fit_m(blocked, TRUE_U, estimated=others, max_iterations=1000, tolerance=1e-10)

    assert session.m[nhs] == initial_m()[nhs]
    for index in others:
        assert session.m[index] == pytest.approx(TRUE_M[index], abs=0.01)


def test_u_is_the_level_share_among_random_pairs() -> None:
    u = estimate_u([((1, 1, 1, 1), 999_000), ((3, 4, 2, 3), 1_000), ((0, 0, 0, 0), 5_000)])

    assert u[0] == pytest.approx((0.999, 0.0, 0.001), abs=1e-5)
    assert sum(u[1]) == pytest.approx(1.0)
    assert all(share > 0 for shares in u for share in shares)  # never seen is not impossible


def test_match_weight_adds_prior_and_level_weights() -> None:
    model = MatchModel(TRUE_M, TRUE_U, 0.5)
    # nhs one digit, dob missing, sex same, postcode exact
    expected = math.log2(0.04 / 0.0005) + math.log2(0.99 / 0.5) + math.log2(0.70 / 0.03)
    assert model.weight((2, 0, 2, 3)) == pytest.approx(expected)
    assert MatchModel(TRUE_M, TRUE_U, 0.2).weight((2, 0, 2, 3)) == pytest.approx(expected + math.log2(0.25))


@pytest.mark.parametrize("broadcast_records", [False, True])
def test_comparison_levels_on_hashes(spark: SparkSession, broadcast_records: bool) -> None:
    records = {
        "typo": ALICE.but(nhs="9434765918", nhs_valid=False),  # fails Modulus 11: no h_nhs
        "swapped_moved": BOB.but(nhs=None, dob="1950-02-07", postcode="LS2 8AA"),
        "jan1_moved": JAN1.but(nhs=None, postcode="S1 9XX"),
        "twin_other_nhs": TWIN_1.but(nhs="6000000007"),  # both twins contradicted: no pair
    }

    pairs = scored_pairs(signatures(spark, records), reference(spark, PERSONS), broadcast_records)

    plan = pairs._jdf.queryExecution().executedPlan().toString()
    assert ("BroadcastHashJoin" in plan) == broadcast_records  # else a shuffle sort-merge join
    assert_df_equality(
        pairs.select("signature", "person_id", "blocking_rule", *LEVEL_COLUMNS),
        spark.createDataFrame(
            [
                (b"typo", "alice", "nhs_digit_deleted", 2, 4, 2, 3),
                (b"typo", "alice", "nhs_digit_deleted", 2, 4, 2, 1),  # alice's old address
                (b"swapped_moved", "bob", "dob_swapped_district", 0, 2, 2, 2),
                (b"jan1_moved", "jan1", "dob_sex_district", 0, 3, 2, 2),
            ],
            "signature binary, person_id string, blocking_rule string, "
            + ", ".join(f"{c} int" for c in LEVEL_COLUMNS),
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_a_person_holding_another_number_is_never_scored(spark: SparkSession) -> None:
    """`decide` keeps a person's best identity: twin A's identity without a number must not
    carry twin B's record (her own number) to A, as A holds another number elsewhere."""
    index = reference(spark, {"twin_a": [TWIN_1.but(nhs=None, postcode="M1 7XX"), TWIN_1]})
    records = {"twin_b_moved": TWIN_2.but(postcode="M1 7XX"), "twin_a_moved": TWIN_1.but(nhs=None, postcode="M1 7XX")}

    pairs = scored_pairs(signatures(spark, records), index)

    assert sorted({(bytes(r.signature).decode(), r.person_id) for r in pairs.collect()}) == [("twin_a_moved", "twin_a")]


def test_decision_needs_threshold_and_a_clear_winner(spark: SparkSession) -> None:
    pairs = spark.createDataFrame(
        [
            (b"clear", "p1", 25.0), (b"clear", "p1", 3.0), (b"clear", "p2", 2.0),
            (b"weak", "p1", 8.0),
            (b"two_qualify", "p1", 20.0), (b"two_qualify", "p2", 12.0),
            (b"close_runner_up", "p1", 15.0), (b"close_runner_up", "p2", 9.0),
        ],
        "signature binary, person_id string, match_weight double",
    )

    decided = pairs.transform(decide(min_weight=10.0))

    assert_df_equality(
        decided,
        spark.createDataFrame(
            [
                (b"clear", "p1", "scored", 25.0, 25.0, None),
                (b"weak", None, None, None, 8.0, None),
                (b"two_qualify", None, None, None, 20.0, "scored"),
                (b"close_runner_up", None, None, None, 15.0, "scored"),
            ],
            "signature binary, person_id string, match_step string, match_weight double, "
            "best_weight double, ambiguous_step string",
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def _population(rng: random.Random, size: int) -> dict[str, Ids]:
    districts = ["LS1", "LS2"]

    def postcode() -> str:
        return f"{rng.choice(districts)} {rng.randint(1, 9)}{rng.choice('ABD')}{rng.choice('EFG')}"

    people = {}
    for n in range(size):
        dob = f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(2, 28):02d}"
        people[f"p{n}"] = Ids(
            nhs=f"{rng.randrange(10**9, 10**10)}", dob=dob, sex=rng.choice("12"), postcode=postcode()
        )
    return people


def _mistyped(nhs: str, rng: random.Random) -> str:
    position = rng.randrange(10)
    digit = str((int(nhs[position]) + rng.randint(1, 9)) % 10)
    return nhs[:position] + digit + nhs[position + 1:]


def _noisy(ids: Ids, rng: random.Random) -> Ids:
    """A hospital copy with independent noise on each identifier, as in HES."""
    district = ids.postcode.split()[0]
    year, month, day = ids.dob.split("-")
    nhs = rng.choices(["same", "missing", "typo"], [0.6, 0.2, 0.2])[0]
    postcode = rng.choices([ids.postcode, f"{district} 9ZZ", "W1A 1AA"], [0.6, 0.3, 0.1])[0]
    swapped = int(day) <= 12 and rng.random() < 0.1
    return ids.but(
        nhs=None if nhs == "missing" else _mistyped(ids.nhs, rng) if nhs == "typo" else ids.nhs,
        nhs_valid=nhs == "same",
        postcode=postcode,
        dob=f"{year}-{day}-{month}" if swapped else ids.dob,
    )


@dataclass(frozen=True)
class ScoredCase:
    """A 402-person index, hospital copies with noise, and the scored step's first run.

    `settings`: a sample of every signature (a full sample) and a refit every 3 runs.
    """

    settings: LinkageSettings
    people: dict[str, Ids]
    noisy: dict[str, Ids]
    to_link: DataFrame
    known: DataFrame
    index: DataFrame
    scored: DataFrame
    fit: ScoredFit


@pytest.fixture(scope="module")
def case(spark: SparkSession) -> ScoredCase:
    rng = random.Random(20240501)
    people = _population(rng, 400)
    twin_a = Ids(nhs="1112223334", dob="2005-04-09", sex="2", postcode="LS1 5AE")
    people |= {"twin_a": twin_a, "twin_b": twin_a.but(nhs="5556667778")}
    records = {f"{p}/clean": ids for p, ids in people.items()}
    noisy = {f"{p}/noisy": _noisy(ids, rng) for p, ids in list(people.items())[:240]}
    records |= noisy | {"twin/no_nhs": twin_a.but(nhs=None, postcode="LS1 7XX")}
    to_link = signatures(spark, records)
    index = reference(spark, {p: [ids] for p, ids in people.items()})
    known = link_deterministic(to_link, index).filter("person_id IS NOT NULL").select("signature", "person_id")
    settings = LinkageSettings(refit_every_runs=3, em_sample_signatures=to_link.count())
    scored, fit = link_scored(to_link, known, index, settings)
    return ScoredCase(settings, people, noisy, to_link, known, index, scored.cache(), fit)


def test_scored_step_links_what_rules_miss_and_never_twins(case: ScoredCase) -> None:
    links = {bytes(r.signature).decode(): r.person_id for r in case.scored.collect()}
    by_rules = {bytes(r.signature).decode(): r.person_id for r in case.known.collect()}

    assert case.fit.model is not None and [rule for rule, _, _ in case.fit.sessions] == ["train_nhs", "train_postcode"]
    wrong = {s: p for s, p in links.items() if p is not None and s.split("/")[0] != p}
    assert wrong == {}
    assert links.get("twin/no_nhs") is None and "twin/no_nhs" in links  # a candidate, yet unlinked
    # a mistyped NHS number, DOB and sex right, moved within the district: only the score links
    typos = {
        s for s, ids in case.noisy.items()
        if not ids.nhs_valid and ids.nhs and ids.dob == case.people[s.split("/")[0]].dob
        and ids.postcode.endswith("9ZZ")
    }
    assert typos and not typos & set(by_rules)
    assert {s for s in typos if links.get(s)} == typos


def test_later_runs_reuse_m_and_u_until_a_refit_is_due(case: ScoredCase) -> None:
    """Run 1 fitted on a full sample; with `refit_every_runs` 3, run 3 reuses its m and u."""
    assert case.fit.model is not None
    assert (case.fit.fitted_run, case.fit.fitted_signatures) == (1, case.settings.em_sample_signatures)
    earlier = FittedParameters(1, case.fit.model.m, case.fit.model.u, case.fit.fitted_signatures)

    scored, fit = link_scored(case.to_link, case.known, case.index, case.settings, run=3, earlier=earlier)
    assert (fit.fitted_run, fit.fitted_signatures, fit.sessions, fit.random_pairs) == (1, earlier.signatures, (), 0)
    assert fit.model == case.fit.model  # the same index, so the same prior too
    assert_df_equality(scored, case.scored, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    "run, sample_shortfall", [(4, 0), (2, 1)], ids=["a refit is due", "run 1's sample was not full"]
)
def test_a_run_estimates_its_own_m_and_u(case: ScoredCase, run: int, sample_shortfall: int) -> None:
    assert case.fit.model is not None
    signatures = case.settings.em_sample_signatures - sample_shortfall
    earlier = FittedParameters(1, case.fit.model.m, case.fit.model.u, signatures)

    _, fit = link_scored(case.to_link, case.known, case.index, case.settings, run=run, earlier=earlier)
    assert fit.fitted_run == run and [rule for rule, _, _ in fit.sessions] == ["train_nhs", "train_postcode"]


def test_settings_are_validated_naming_the_field() -> None:
    assert linkage_settings({}).min_weight == pytest.approx(math.log2(999))
    with pytest.raises(ConfigError, match="min_probability"):
        linkage_settings({"min_probability": 1.5})
    with pytest.raises(ConfigError, match="refit_every_runs"):
        linkage_settings({"refit_every_runs": 0})
    with pytest.raises(ConfigError, match="linkage.threshold"):
        linkage_settings({"threshold": 0.9})
