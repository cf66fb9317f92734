"""The link job on a tiny warehouse: contract output, person ids, incremental runs, retry.

One scenario runs once per module (linkage runs are the slow part): run 1, the same run
retried after dying before its ledger commit, a compaction of a clinical table (its old rows
in a new file), run 2 with a new month of submissions, and a run 3 with nothing new through
the `caredata link` command. Tests assert on snapshots.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from linkage_data import ALICE, BOB, TWIN_1, TWIN_2, Ids, clinical_rows, h, land
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark.cli import main
from caredata_spark.linkage.job import OUTCOME_DDL, link, record_outcomes
from caredata_spark.linkage.report import fitted_parameters
from caredata_spark.linkage.scoring import COMPARISONS
from caredata_spark.linkage.settings import LinkageSettings
from caredata_spark.storage import DeltaStore, open_store
from caredata_spark.tables import LINK_MAP, LINKAGE_INPUTS, LINKAGE_REPORT, LINKAGE_RUNS, PERSONS, clinical, table_path

CAROL = Ids(dob="1990-06-07", sex="2", postcode="B1 1BB")  # registered without NHS number
DAVE = Ids(nhs="6000000007", dob="2001-02-03", sex="1", postcode="M4 4DD")  # hospital only, at first
ERIN = Ids(nhs="7000000008", dob="1960-11-12", sex="2", postcode="S2 2EE")

RUN_1 = {
    "gp_patients": [
        ("A81001/1", "A81001", ALICE),
        ("B82001/9", "B82001", ALICE.but(postcode="BD1 1AA")),  # an earlier registration
        ("A81001/2", "A81001", BOB),
        ("A81001/3", "A81001", CAROL),
        ("A81001/4", "A81001", TWIN_1),
        ("A81001/5", "A81001", TWIN_2),
    ],
    "hes_apc": [
        ("E1", "RTH", ALICE),
        ("E2", "RTH", BOB.but(postcode=None)),
        ("E3", "RXH", DAVE),
        ("E4", "RXH", DAVE.but(nhs=None)),
        ("E5", "RXH", TWIN_1.but(nhs=None)),
        ("E6", "RXH", Ids()),  # every identifier missing or a placeholder
    ],
    "hes_ae": [("A1", "RTH", CAROL)],
}
RUN_2 = {
    "gp_patients": [
        ("A81001/1", "A81001", ALICE.but(postcode="LS7 1AA")),  # next extract: she moved
        ("C83001/7", "C83001", DAVE),  # the hospital-only person registers
    ],
    "hes_apc": [
        ("E1", "RTH", ALICE),  # resubmitted: keeps its link, gets no second row
        ("E7", "RTH", ALICE.but(nhs=None, postcode="LS7 1AA")),
        ("E8", "RXH", ERIN),
    ],
}


def nhs_person(ids: Ids) -> str:
    """The id the job derives for the person an NHS number defines."""
    assert ids.nhs
    return hashlib.sha256(b"caredata/person/nhs/" + h("nhs", ids.nhs)).hexdigest()[:32]


def gp_record_person(record_key: str) -> str:
    return hashlib.sha256(f"caredata/person/gp/{record_key}".encode()).hexdigest()[:32]


@dataclass
class Scenario:
    warehouse: Path
    first: dict[str, Any]
    retried: dict[str, Any]
    second: dict[str, Any]
    link_map_1: list[tuple]
    link_map_2: list[tuple]
    versions_2: dict[str, int | None]
    compacted: tuple[int, int]


def _land_all(spark: SparkSession, store: DeltaStore, warehouse: Path, batch: dict, tag: str) -> None:
    for dataset, rows in batch.items():
        land(store, warehouse, dataset, clinical_rows(spark, rows, f"{tag}-{dataset}"))


def _rows(store: DeltaStore, warehouse: Path, name: str) -> list[tuple]:
    frame = store.read(table_path(str(warehouse), name))
    return sorted(tuple(r) for r in frame.select("source", "record_key", "person_id", "match_step", "run").collect())


def _versions(store: DeltaStore, warehouse: Path) -> dict[str, int | None]:
    return {n: store.version(table_path(str(warehouse), n)) for n in (LINK_MAP, PERSONS, LINKAGE_REPORT, LINKAGE_RUNS)}


@pytest.fixture(scope="module")
def scenario(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    warehouse = tmp_path_factory.mktemp("warehouse")
    store = open_store(spark)
    settings = LinkageSettings()
    _land_all(spark, store, warehouse, RUN_1, "m1")
    first = link(spark, store, str(warehouse), settings)
    link_map_1 = _rows(store, warehouse, LINK_MAP)
    # run 1 dies after its link map commit, before the ledger's: the re-run is run 1 again
    shutil.rmtree(table_path(str(warehouse), LINKAGE_RUNS))
    retried = link(spark, store, str(warehouse), settings)
    compacted = store.compact(table_path(str(warehouse), clinical("hes_apc")))
    _land_all(spark, store, warehouse, RUN_2, "m2")
    second = link(spark, store, str(warehouse), settings)
    link_map_2 = _rows(store, warehouse, LINK_MAP)
    versions_2 = _versions(store, warehouse)
    return Scenario(warehouse, first, retried, second, link_map_1, link_map_2, versions_2, compacted)


def test_a_key_twice_in_one_batch_gets_one_outcome(spark: SparkSession) -> None:
    """Its linked version wins, then the larger signature; a key seen once passes as it is."""
    hes_rows = spark.createDataFrame(
        [
            ("hes_apc", "once", "RTH", b"s1"),
            ("hes_apc", "twice", "RTH", b"s0"),  # unlinked version
            ("hes_apc", "twice", "RXH", b"s2"),  # linked version
            ("hes_apc", "same_row_twice", "RTH", b"s1"),
            ("hes_apc", "same_row_twice", "RTH", b"s1"),
            ("hes_op", "never_linked_twice", "RTH", b"s0"),
            ("hes_op", "never_linked_twice", "RTH", b"s3"),
            ("hes_op", "no_candidate", "RTH", b"s9"),
        ],
        "source string, record_key string, provider string, signature binary",
    )
    by_signature = spark.createDataFrame(
        [
            (b"s0", None, None, None, 3.5, "det_6"),
            (b"s1", "p1", "det_1", None, None, None),
            (b"s2", "p2", "scored", 12.0, 12.0, None),
            (b"s3", None, None, None, None, None),
        ],
        OUTCOME_DDL,
    )
    expected = spark.createDataFrame(
        [
            ("hes_apc", "once", "RTH", "p1", "det_1", None, None, None),
            ("hes_apc", "twice", "RXH", "p2", "scored", 12.0, 12.0, None),
            ("hes_apc", "same_row_twice", "RTH", "p1", "det_1", None, None, None),
            ("hes_op", "never_linked_twice", "RTH", None, None, None, None, None),
            ("hes_op", "no_candidate", "RTH", None, None, None, None, None),
        ],
        "source string, record_key string, provider string, person_id string, match_step string, "
        "match_weight double, best_weight double, ambiguous_step string",
    )
    assert_df_equality(record_outcomes(hes_rows, by_signature), expected, ignore_row_order=True, ignore_nullable=True)


def test_first_run_links_per_contract(scenario: Scenario) -> None:
    alice, bob, dave = nhs_person(ALICE), nhs_person(BOB), nhs_person(DAVE)
    carol = gp_record_person("A81001/3")
    assert scenario.link_map_1 == sorted(
        [
            ("gp", "A81001/1", alice, "gp_registration", 1),
            ("gp", "B82001/9", alice, "gp_registration", 1),  # one person at two practices
            ("gp", "A81001/2", bob, "gp_registration", 1),
            ("gp", "A81001/3", carol, "gp_registration", 1),
            ("gp", "A81001/4", nhs_person(TWIN_1), "gp_registration", 1),
            ("gp", "A81001/5", nhs_person(TWIN_2), "gp_registration", 1),
            ("hes_apc", "E1", alice, "det_1", 1),
            ("hes_apc", "E2", bob, "det_2", 1),
            ("hes_apc", "E3", dave, "hes_cluster", 1),
            ("hes_apc", "E4", dave, "det_6", 1),
            ("hes_apc", "E5", None, None, 1),  # a twin without NHS number: ambiguous
            ("hes_apc", "E6", None, None, 1),
            ("hes_ae", "A1", carol, "det_6", 1),
        ]
    )
    assert scenario.first["records"]["hes_apc"] == {"det_1": 1, "det_2": 1, "det_6": 1, "hes_cluster": 1, "unlinked": 2}
    assert scenario.first["ambiguous"] == {"hes_apc": 1}
    assert scenario.first["new_persons"] == {"gp": 5.0, "hes": 1.0}


def test_link_map_has_the_contract_columns(spark: SparkSession, scenario: Scenario) -> None:
    link_map = open_store(spark).read(table_path(str(scenario.warehouse), LINK_MAP))
    types = dict(link_map.dtypes)
    assert {c: types[c] for c in ("source", "record_key", "person_id", "match_step")} == dict.fromkeys(
        ("source", "record_key", "person_id", "match_step"), "string"
    )
    assert types["match_weight"] == "double"


def test_a_retried_run_changes_nothing(scenario: Scenario) -> None:
    assert scenario.retried["run"] == 1
    first_keys = [row[:2] for row in scenario.link_map_1]
    assert len(set(first_keys)) == len(first_keys)
    assert [r for r in scenario.link_map_2 if r[4] == 1] == scenario.link_map_1


def test_a_new_month_keeps_every_id_and_links_only_what_is_new(scenario: Scenario) -> None:
    new_rows = [r for r in scenario.link_map_2 if r[4] == 2]
    alice, dave = nhs_person(ALICE), nhs_person(DAVE)
    assert new_rows == sorted(
        [
            ("gp", "C83001/7", dave, "gp_registration", 2),  # joins the hospital-only person
            ("hes_apc", "E7", alice, "det_6", 2),  # matched by her new address from run 2's extract
            ("hes_apc", "E8", nhs_person(ERIN), "hes_cluster", 2),
        ]
    )
    keys = [r[:2] for r in scenario.link_map_2]
    assert len(keys) == len(set(keys))
    assert scenario.second["new_persons"] == {"hes": 1.0}


def test_each_run_records_the_table_versions_it_read(spark: SparkSession, scenario: Scenario) -> None:
    """Run 2 reads from run 1's versions on: the month's files and the compacted one (its
    rows, run 1's, are dropped by submission, as the test above shows), not the history."""
    assert scenario.compacted[0] >= 2
    inputs = open_store(spark).read(table_path(str(scenario.warehouse), LINKAGE_INPUTS))
    assert sorted(tuple(r) for r in inputs.collect()) == [
        (1, "gp", "m1-gp_patients", 0),
        (1, "hes_ae", "m1-hes_ae", 0),
        (1, "hes_apc", "m1-hes_apc", 0),
        (2, "gp", "m2-gp_patients", 1),
        (2, "hes_apc", "m2-hes_apc", 2),  # the compaction was version 1
    ]


def test_person_index_rows_are_per_identity(spark: SparkSession, scenario: Scenario) -> None:
    persons = open_store(spark).read(table_path(str(scenario.warehouse), PERSONS))
    by_person = {
        r.person_id: (sorted(r.origins), r.identities)
        for r in persons.groupBy("person_id")
        .agg(F.collect_set("origin").alias("origins"), F.count("signature").alias("identities"))
        .collect()
    }
    assert by_person[nhs_person(ALICE)] == (["gp"], 3)  # two practices, then a new address
    # registered with the very identifiers his hospital records founded him with: one identity
    assert by_person[nhs_person(DAVE)] == (["hes"], 1)
    assert persons.count() == persons.dropDuplicates(["person_id", "signature"]).count()


def test_report_counts_records_per_run_step_and_provider(spark: SparkSession, scenario: Scenario) -> None:
    report = open_store(spark).read(table_path(str(scenario.warehouse), LINKAGE_REPORT))
    records = report.filter("metric = 'records'")
    per_run = {r.run: r.total for r in records.groupBy("run").agg(F.sum("value").alias("total")).collect()}
    per_provider = {
        r.provider: r.total
        for r in records.filter("run = 1 AND source = 'hes_apc'")
        .groupBy("provider")
        .agg(F.sum("value").alias("total"))
        .collect()
    }
    assert per_run == {1: 13.0, 2: 3.0}
    assert per_provider == {"RTH": 2.0, "RXH": 4.0}
    assert report.filter("metric = 'em_m' AND run = 1").count() == sum(len(c.levels) for c in COMPARISONS)


def test_the_report_keeps_each_runs_model_for_the_next(spark: SparkSession, scenario: Scenario) -> None:
    """Run 1 estimated m and u from its few signatures, less than a full sample, so run 2
    estimated its own; the next run reads run 2's back from the report."""
    report = open_store(spark).read(table_path(str(scenario.warehouse), LINKAGE_REPORT))
    assert {r.run: r.value for r in report.filter("metric = 'model_run'").collect()} == {1: 1.0, 2: 2.0}

    parameters = fitted_parameters(report)
    assert parameters is not None and parameters.run == 2
    assert parameters.signatures == scenario.second["model_signatures"] > 0
    em = [scenario.second[metric] for metric in ("em_m", "em_u")]
    assert (parameters.m, parameters.u) == tuple(
        tuple(tuple(values[f"{c.name}:{level}"] for level in c.levels) for c in COMPARISONS) for values in em
    )
    assert not parameters.reusable(3, LinkageSettings())  # a partial sample
    assert parameters.reusable(3, LinkageSettings(em_sample_signatures=parameters.signatures))


def test_run_2_scores_with_the_m_and_u_run_1_estimated_from_a_full_sample(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A sample of one signature is full here, so run 2 reuses run 1's estimate, says so in
    the report, and draws no pairs of its own."""
    store = open_store(spark)
    settings = LinkageSettings(em_sample_signatures=1)
    _land_all(spark, store, tmp_path, RUN_1, "m1")
    first = link(spark, store, str(tmp_path), settings)
    _land_all(spark, store, tmp_path, RUN_2, "m2")
    second = link(spark, store, str(tmp_path), settings)

    assert (first["model_run"], second["model_run"]) == (1.0, 1.0)
    assert (second["em_m"], second["em_u"]) == (first["em_m"], first["em_u"])
    assert second["random_pairs"] == 0 and "training_pairs" not in second
    assert first["random_pairs"] > 0


def test_nothing_new_is_a_no_op_through_the_command(
    scenario: Scenario, spark: SparkSession, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(spark)

    code = main(["link", "--warehouse", str(scenario.warehouse)])

    assert code == 0
    assert '"new_rows": 0' in capsys.readouterr().out
    assert _versions(store, scenario.warehouse) == scenario.versions_2


def _run_1_dies_after_its_person_index(spark: SparkSession, store: DeltaStore, warehouse: Path) -> None:
    """Run 1 links Alice's registration and commits its plan and person index, not the rest."""
    _land_all(spark, store, warehouse, {"gp_patients": [("A81001/1", "A81001", ALICE)]}, "m1")
    link(spark, store, str(warehouse), LinkageSettings())
    for name in (LINK_MAP, LINKAGE_REPORT, LINKAGE_RUNS):
        shutil.rmtree(table_path(str(warehouse), name))


def test_a_run_resumed_after_new_submissions_links_what_it_planned_first(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A month is ingested before the run that died is re-run (as when the next day's
    pipeline ingests first). The re-run links run 1's submissions only, so every person in
    the link map is in the index, and the month waits for run 2. Without the plan, the
    re-run linked the month too, and the persons it founded never reached the skipped index."""
    store = open_store(spark)
    _run_1_dies_after_its_person_index(spark, store, tmp_path)
    month = {"gp_patients": [("A81001/2", "A81001", BOB)], "hes_apc": [("E8", "RXH", ERIN)]}
    _land_all(spark, store, tmp_path, month, "m2")

    resumed = link(spark, store, str(tmp_path), LinkageSettings())
    after_resume = _rows(store, tmp_path, LINK_MAP)
    link(spark, store, str(tmp_path), LinkageSettings())

    assert resumed["run"] == 1
    assert after_resume == [("gp", "A81001/1", nhs_person(ALICE), "gp_registration", 1)]
    assert _rows(store, tmp_path, LINK_MAP) == sorted([
        *after_resume,
        ("gp", "A81001/2", nhs_person(BOB), "gp_registration", 2),
        ("hes_apc", "E8", nhs_person(ERIN), "hes_cluster", 2),
    ])
    index = {r.person_id for r in store.read(table_path(str(tmp_path), PERSONS)).collect()}
    assert index == {nhs_person(p) for p in (ALICE, BOB, ERIN)}


def test_a_resumed_run_whose_rows_were_all_erased_closes_and_the_next_goes_on(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A type 1 purge took every row run 1 planned before it was re-run: the re-run closes
    run 1 in the ledger rather than waiting on its plan for ever."""
    store = open_store(spark)
    _run_1_dies_after_its_person_index(spark, store, tmp_path)
    gp = table_path(str(tmp_path), clinical("gp_patients"))
    store.delete_keys(gp, spark.createDataFrame([("A81001/1",)], "record_key string"))
    _land_all(spark, store, tmp_path, {"hes_apc": [("E8", "RXH", ERIN)]}, "m2")

    assert link(spark, store, str(tmp_path), LinkageSettings())["new_rows"] == 0
    assert link(spark, store, str(tmp_path), LinkageSettings())["run"] == 2
    assert _rows(store, tmp_path, LINK_MAP) == [("hes_apc", "E8", nhs_person(ERIN), "hes_cluster", 2)]


@pytest.mark.parametrize("broadcast_limit", [2_000_000, 0], ids=["founders broadcast", "shuffled"])
def test_a_registration_without_nhs_number_adopts_the_number_its_hospital_records_carry(
    spark: SparkSession, tmp_path: Path, broadcast_limit: int
) -> None:
    """Carol's GP record lacks her NHS number; her hospital records carry it. One of them
    matches her registration on sex, DOB and postcode, so she adopts the number and all its
    records (even at another address) instead of a second, hospital-only person. A number
    whose records match nobody still founds a hospital-only person. The same whether the
    founders are broadcast or shuffled (a limit of 0 keys broadcasts nothing)."""
    carol_nhs = CAROL.but(nhs="8000000008")
    stranger = Ids(nhs="9000000009", dob="1955-05-05", sex="1", postcode="B9 9ZZ")
    store = open_store(spark)
    _land_all(spark, store, tmp_path, {
        "gp_patients": [("A81001/3", "A81001", CAROL)],
        "hes_apc": [
            ("C1", "RTH", carol_nhs),
            ("C2", "RTH", carol_nhs.but(postcode="B2 2XX")),  # her old address: no step matches it
            ("S1", "RXH", stranger),
        ],
    }, "adopt")
    summary = link(spark, store, str(tmp_path), LinkageSettings(broadcast_residue_keys=broadcast_limit))
    carol = gp_record_person("A81001/3")
    assert _rows(store, tmp_path, LINK_MAP) == sorted([
        ("gp", "A81001/3", carol, "gp_registration", 1),
        ("hes_apc", "C1", carol, "nhs_group", 1),
        ("hes_apc", "C2", carol, "nhs_group", 1),
        ("hes_apc", "S1", nhs_person(stranger), "hes_cluster", 1),
    ])
    assert summary["new_persons"] == {"gp": 1.0, "hes": 1.0}
    persons = store.read(table_path(str(tmp_path), PERSONS))
    assert persons.filter(F.col("person_id") == carol).count() == 3  # her registration and both records


# three pairs of twins: each pair shares DOB, sex and postcode, not the NHS number
TOGETHER = (TWIN_1, TWIN_2)  # both twins' hospital records arrive in one run
EXTRACTS = (TWIN_1.but(nhs="1000000001", postcode="M3 3CC"), TWIN_1.but(nhs="1000000002", postcode="M3 3CC"))
LATER = (TWIN_1.but(nhs="2000000001", postcode="M5 5EE"), TWIN_1.but(nhs="2000000002", postcode="M5 5EE"))
TWINS_RUN_1 = {
    "gp_patients": [
        ("A81001/1", "A81001", TOGETHER[0].but(nhs=None)),  # twin A registered without her number
        ("A81001/2", "A81001", EXTRACTS[0].but(nhs=None)),  # this extract lacks it, the earlier one has it
        ("A81001/3", "A81001", LATER[0].but(nhs=None)),
    ],
    "hes_apc": [
        ("T1A", "RTH", TOGETHER[0]),
        ("T1B", "RTH", TOGETHER[1]),
        ("T2B", "RTH", EXTRACTS[1]),
        ("T3A", "RTH", LATER[0]),  # the registration adopts her number
    ],
}
TWINS_RUN_2 = {
    "gp_patients": [("C83001/7", "C83001", TOGETHER[1].but(postcode="M2 2BB"))],  # twin B registers
    "hes_apc": [("T3B", "RTH", LATER[1])],
}


@pytest.fixture(scope="module")
def twins(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The link map after two runs over the three pairs of twins."""
    warehouse = tmp_path_factory.mktemp("twins")
    store = open_store(spark)
    land(store, warehouse, "gp_patients", clinical_rows(spark, [("A81001/2", "A81001", EXTRACTS[0])], "m0-gp"))
    _land_all(spark, store, warehouse, TWINS_RUN_1, "m1")
    link(spark, store, str(warehouse), LinkageSettings())
    _land_all(spark, store, warehouse, TWINS_RUN_2, "m2")
    link(spark, store, str(warehouse), LinkageSettings())
    return _rows(store, warehouse, LINK_MAP)


def _of(link_map: list[tuple], *keys: str) -> list[tuple]:
    return [row for row in link_map if row[1] in keys]


def test_a_registration_both_twins_records_match_adopts_neither_number(twins: list[tuple]) -> None:
    """Twin A's registration lacks her number; both twins' records match it on DOB, sex and
    postcode. A person adopting two numbers would name two people: each number founds its own."""
    assert _of(twins, "A81001/1", "T1A", "T1B") == sorted([
        ("gp", "A81001/1", gp_record_person("A81001/1"), "gp_registration", 1),
        ("hes_apc", "T1A", nhs_person(TOGETHER[0]), "hes_cluster", 1),
        ("hes_apc", "T1B", nhs_person(TOGETHER[1]), "hes_cluster", 1),
    ])


def test_a_person_holding_a_number_in_any_identity_adopts_no_other(twins: list[tuple]) -> None:
    """Twin A's registration carries her number in one extract only: twin B's record matches
    the extract without it, yet A holds a number, so B's number founds B."""
    assert _of(twins, "A81001/2", "T2B") == sorted([
        ("gp", "A81001/2", nhs_person(EXTRACTS[0]), "gp_registration", 1),
        ("hes_apc", "T2B", nhs_person(EXTRACTS[1]), "hes_cluster", 1),
    ])


def test_a_number_adopted_in_an_earlier_run_bars_another(twins: list[tuple]) -> None:
    """Run 1: twin A's registration adopts her number. Run 2: twin B's record matches the
    registration, which now holds A's number: B founds her own person."""
    assert _of(twins, "A81001/3", "T3A", "T3B") == sorted([
        ("gp", "A81001/3", gp_record_person("A81001/3"), "gp_registration", 1),
        ("hes_apc", "T3A", gp_record_person("A81001/3"), "nhs_group", 1),
        ("hes_apc", "T3B", nhs_person(LATER[1]), "hes_cluster", 2),
    ])


def test_a_twin_registering_later_joins_her_own_number_not_her_twin(twins: list[tuple]) -> None:
    """GP registrations join the person owning their number: had twin A's registration
    adopted B's number, B's own registration would have joined A."""
    assert _of(twins, "C83001/7") == [("gp", "C83001/7", nhs_person(TOGETHER[1]), "gp_registration", 2)]
    assert len({row[2] for row in twins}) == 7  # 3 registrations of twins A, 4 numbers founded
