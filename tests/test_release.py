"""Amber and red releases on a hand-made warehouse: real keys, real Delta, real envelopes."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from release_warehouse import (
    NHS_A,
    NHS_B,
    OBJECTORS,
    RECORDS,
    RELEASE_DATE,
    UNLINKED,
    build_warehouse,
    keys_of,
)
from leaks import plan_text, secrets_of

from caredata_spark.agreements import ReleaseRefused, load_agreement
from caredata_spark.cli import main
from caredata_spark.config import Settings
from caredata_spark.contract import DATASETS
from caredata_spark.envelope import EnvelopeError, decrypt_stream
from caredata_spark.keyed_hash import derived_key_frame
from caredata_spark.keys import KEY_BYTES, Role, TransportPrivateKey, generate_keys, key_path
from caredata_spark.objections import load_objection_codes
from caredata_spark.pseudonymisation import PERSON, RECORD, agreement_key, key_info, pseudonyms
from caredata_spark.release import (
    MANIFEST,
    ReleaseFailed,
    ReleaseRequest,
    ReleaseResult,
    Sources,
    eligible,
    not_of_objecting_numbers,
    release,
    released_rows,
    type2_objectors,
)
from caredata_spark.storage import open_store
from caredata_spark.tables import AUDIT, RELEASE_RISK, SUBMISSIONS, clinical, table_path

ORG, PURPOSE = "University of Leeds", "Diabetes outcomes"
OBJECTION_CODES = load_objection_codes().all
AMBER_FIELDS = {
    "gp_events": ["EVENT_DATE", "SNOMED_CODE", "VALUE", "age", "sex", "area"],
    "hes_apc": ["ADMIDATE", "DIAG_01", "age", "year_of_birth", "district"],
}


@pytest.fixture(scope="module")
def env(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The warehouse, the safe haven's keys, two recipients' keys and an agreements folder."""
    root = tmp_path_factory.mktemp("release")
    store = open_store(spark)
    keys = keys_of(root / "keys")
    build_warehouse(spark, store, root / "warehouse", keys, tuple(AMBER_FIELDS))
    recipients = {}
    for name in ("leeds", "other"):
        generate_keys(root / name)
        seed = (root / name / "transport.key").read_bytes()
        recipients[name] = TransportPrivateKey.from_seed(seed)
    (root / "agreements").mkdir()
    return {"root": root, "store": store, "keys": keys, "recipients": recipients,
            "warehouse": str(root / "warehouse"), "agreements": root / "agreements"}


def write_agreement(env: dict[str, Any], agreement_id: str, **changes: Any) -> str:
    data = {
        "id": agreement_id,
        "recipient": {"organisation": ORG, "public_key": str(env["root"] / "leeds" / "transport.pub")},
        "purpose": PURPOSE,
        "flow": "amber",
        "datasets": AMBER_FIELDS,
        "dates": "month",
        "start": dt.date(2025, 1, 1),
        "end": dt.date(2025, 12, 31),
        "territory": "England",
        "destroy_by": dt.date(2026, 12, 31),
        "approvers": ["Ann Checker", "Bob Checker", "Cy Requester"],
        **changes,
    }
    (env["agreements"] / f"{agreement_id}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return agreement_id


def run(env: dict[str, Any], spark: SparkSession, agreement_id: str, requester: str = "Cy Requester",
        approvers: tuple[str, ...] = (), today: dt.date = RELEASE_DATE) -> ReleaseResult:
    request = ReleaseRequest(agreement_id, requester, approvers, str(env["agreements"]))
    return release(spark, env["store"], Settings(keys=env["keys"]), env["warehouse"], request,
                   env["root"] / "out", today=today)


def derived_key(env: dict[str, Any], organisation: str = ORG, purpose: str = PURPOSE) -> bytes:
    master = key_path(env["keys"], Role.PSEUDONYM).read_bytes()
    info = key_info(organisation, purpose).encode()
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def pseudonym(key: bytes, name: str, value: str) -> str:
    return hmac.new(key, f"{name}:{value}".encode(), hashlib.sha256).digest()[:16].hex()


def record_keys_by_pseudonym(key: bytes, dataset: str) -> dict[str, str]:
    source = DATASETS[dataset].source
    return {pseudonym(key, RECORD, f"{source}/{r.record_key}"): r.record_key for r in RECORDS if r.dataset == dataset}


def delivered(result: ReleaseResult, recipient: TransportPrivateKey) -> dict[str, list[dict[str, str]]]:
    """Each dataset's rows as the recipient reads them: decrypted, parsed, parts joined."""
    manifest = json.loads((result.delivery / MANIFEST).read_text())
    tables: dict[str, list[dict[str, str]]] = {}
    for name, described in manifest["datasets"].items():
        rows: list[dict[str, str]] = []
        for file in described["files"]:
            text = b"".join(decrypt_stream(result.delivery / file["path"], recipient)).decode()
            rows += list(csv.DictReader(io.StringIO(text)))
        tables[name] = rows
    return tables


def audit_rows(spark: SparkSession, env: dict[str, Any], agreement_id: str) -> list[Any]:
    table = env["store"].read(table_path(env["warehouse"], AUDIT))
    return table.filter(F.col("agreement_id") == agreement_id).orderBy("at").collect()


@pytest.fixture(scope="module")
def amber(env: dict[str, Any], spark: SparkSession) -> ReleaseResult:
    return run(env, spark, write_agreement(env, "AMBER-1"))


def test_amber_releases_exactly_the_eligible_records(env, amber) -> None:
    key = derived_key(env)
    tables = delivered(amber, env["recipients"]["leeds"])
    for name in AMBER_FIELDS:
        by_pseudonym = record_keys_by_pseudonym(key, name)
        released = sorted(by_pseudonym[row[RECORD]] for row in tables[name])
        expected = sorted(
            r.record_key for r in RECORDS
            if r.dataset == name and r.person_id not in OBJECTORS and r.record_key not in UNLINKED
            and not (name == "gp_events" and r.diag in OBJECTION_CODES)  # pC's withdrawal: never released
        )
        assert released == expected
        persons = {pseudonym(key, PERSON, p) for p in {r.person_id for r in RECORDS} if p}
        assert {row[PERSON] for row in tables[name]} <= persons
    assert amber.rows == {"gp_events": 3, "hes_apc": 4}


def test_no_field_outside_the_agreement_is_written(env, amber) -> None:
    tables = delivered(amber, env["recipients"]["leeds"])
    plaintext = json.dumps(tables)
    for name, fields in AMBER_FIELDS.items():
        assert list(tables[name][0]) == [PERSON, RECORD, *fields]
    # values of fields not agreed (see release_warehouse: traceable per column), identifiers
    for forbidden in ("admimeth-", "diag_02-", "opertn_01-", NHS_A, NHS_B, "1980-05-04", "LS1 4AB", "A81001/"):
        assert forbidden not in plaintext
    assert {row["EVENT_DATE"] for row in tables["gp_events"]} == {"2024-01", "2024-03", "2024-06"}
    assert {row["year_of_birth"] for row in tables["hes_apc"]} == {"1980", "1981", "2001"}


def test_manifest_names_every_file_with_its_hash(env, amber) -> None:
    manifest = json.loads((amber.delivery / MANIFEST).read_text())
    assert manifest["agreement"]["id"] == "AMBER-1" and manifest["agreement"]["flow"] == "amber"
    on_disk = sorted(str(p.relative_to(amber.delivery)) for p in amber.delivery.rglob("*.enc"))
    listed = [f for d in manifest["datasets"].values() for f in d["files"]]
    assert sorted(f["path"] for f in listed) == on_disk
    for file in listed:
        assert hashlib.sha256((amber.delivery / file["path"]).read_bytes()).hexdigest() == file["sha256"]
    assert {n: d["rows"] for n, d in manifest["datasets"].items()} == amber.rows
    assert manifest["datasets"]["hes_apc"]["fields"] == AMBER_FIELDS["hes_apc"]
    assert [p.name for p in amber.delivery.parent.iterdir()] == [amber.delivery.name]  # no partial left


def test_delivery_opens_only_with_the_recipients_key(env, amber) -> None:
    part = next(amber.delivery.rglob("*.enc"))
    with pytest.raises(EnvelopeError, match="wrong key"):
        b"".join(decrypt_stream(part, env["recipients"]["other"]))


def test_risk_report_is_stored_and_audit_records_the_release(spark, env, amber) -> None:
    risk = amber.risk["hes_apc"]
    assert risk.quasi_identifiers == ("ADMIDATE", "age", "year_of_birth", "district")
    assert (risk.records, risk.smallest_class, risk.records_at_risk, risk.highest_risk) == (4, 1, 4, 1.0)
    stored = env["store"].read(table_path(env["warehouse"], RELEASE_RISK))
    assert stored.filter(F.col("release_id") == amber.release_id).count() == 2
    outcomes = [(r.outcome, r.rows, r.release_id) for r in audit_rows(spark, env, "AMBER-1")]
    assert outcomes[:2] == [("started", None, amber.release_id), ("done", 7, amber.release_id)]


def test_two_agreements_share_no_pseudonym_over_100k_people(spark, env) -> None:
    master = str(key_path(env["keys"], Role.PSEUDONYM))
    people = spark.range(100_000).select(
        F.lit("gp").alias("source"), F.col("id").cast("string").alias("record_key"),
        F.sha2(F.col("id").cast("string"), 256).alias("person_id"),
    )
    a, b = (
        people.transform(pseudonyms(derived_key_frame(spark, master, key_info(ORG, purpose)))).select(PERSON)
        for purpose in (PURPOSE, "Another purpose")
    )
    assert a.distinct().count() == 100_000
    assert a.join(b, on=PERSON, how="inner").count() == 0


RED_CONSENT = {"flow": "red", "legal_basis": {"kind": "consent"}}
CHECKERS = ("Ann Checker", "Bob Checker")


@pytest.mark.parametrize(
    ("changes", "approvers", "reason"),
    [
        pytest.param({"end": dt.date(2025, 3, 31), "destroy_by": dt.date(2025, 6, 1)}, (),
                     "expired on 2025-03-31", id="expired"),
        pytest.param({"start": dt.date(2025, 6, 1)}, (), "starts on 2025-06-01", id="future"),
        pytest.param({"flow": "red"}, CHECKERS, "no legal basis for identifiable data", id="red-no-basis"),
        pytest.param({"flow": "red", "legal_basis": {"kind": "public_task"}}, CHECKERS, "no legal basis",
                     id="red-amber-basis"),
        pytest.param(RED_CONSENT, ("Ann Checker",), "two distinct approvers", id="one-approver"),
        pytest.param(RED_CONSENT, ("Ann Checker", "Ann Checker"), "two distinct", id="same-approver"),
        pytest.param(RED_CONSENT, ("Ann Checker", "Cy Requester"), "own release", id="self-approval"),
        pytest.param(RED_CONSENT, ("Ann Checker", "Eve"), "not approvers", id="unknown-approver"),
        pytest.param({"datasets": {"hes_apc": ["nhs_number"]}}, (), "identifiable: red flow only",
                     id="amber-identifiers"),
    ],
)
def test_refused_requests_are_audited_and_deliver_nothing(
    spark, env, request, changes, approvers, reason
) -> None:
    agreement_id = write_agreement(env, f"REFUSED-{request.node.callspec.id}", **changes)
    with pytest.raises(ReleaseRefused, match=reason):
        run(env, spark, agreement_id, approvers=approvers)
    (row,) = audit_rows(spark, env, agreement_id)
    assert row.outcome == "refused" and reason in row.reason and row.requester == "Cy Requester"
    assert not (env["root"] / "out" / agreement_id).exists()


def test_red_civil_emergency_overrides_objections_and_adds_identifiers(spark, env) -> None:
    agreement_id = write_agreement(
        env, "RED-CE", flow="red", legal_basis={"kind": "civil_emergency", "reference": "COPI 2025"},
        datasets={"hes_apc": ["nhs_number", "dob", "ADMIDATE"]}, dates="day",
    )
    result = run(env, spark, agreement_id, approvers=CHECKERS)
    (rows,) = delivered(result, env["recipients"]["leeds"]).values()
    key = derived_key(env)
    by_key = {record_keys_by_pseudonym(key, "hes_apc")[r[RECORD]]: r for r in rows}
    assert set(by_key) == {r.record_key for r in RECORDS if r.dataset == "hes_apc"}  # objector, unlinked
    # EPI2's identity from the latest run's file, not the earlier file whose id sorts last
    assert by_key["EPI2"]["nhs_number"] == NHS_B and by_key["EPI1"]["dob"] == "1980-05-04"
    assert by_key["EPI9"][PERSON] == ""  # unlinked: no person to name
    assert by_key["EPI7"]["nhs_number"] == ""  # never had one
    row = audit_rows(spark, env, agreement_id)[0]
    assert row.approvers == ["Ann Checker", "Bob Checker"] and row.legal_basis == "civil_emergency COPI 2025"


def test_red_s251_still_excludes_objectors(spark, env) -> None:
    agreement_id = write_agreement(
        env, "RED-S251", flow="red", legal_basis={"kind": "s251", "reference": "CAG 1"},
        datasets={"hes_apc": ["nhs_number"]},
    )
    result = run(env, spark, agreement_id, approvers=CHECKERS)
    (rows,) = delivered(result, env["recipients"]["leeds"]).values()
    assert NHS_B not in {r["nhs_number"] for r in rows} and len(rows) == 4


def test_failed_release_leaves_no_delivery_and_is_audited(spark, env) -> None:
    agreement_id = write_agreement(env, "NO-TABLE", datasets={"gp_events": ["VALUE"], "hes_op": ["APPTDATE"]})
    env["store"].write(  # a warehouse without hes_op
        env["store"].read(table_path(env["warehouse"], clinical("gp_events"))),
        table_path(str(env["root"] / "partial"), clinical("gp_events")),
    )
    for name in ("linkage/link_map", "linkage/persons", "ingest/objections", "ingest/submissions"):
        env["store"].write(env["store"].read(table_path(env["warehouse"], name)), table_path(str(env["root"] / "partial"), name))
    request = ReleaseRequest(agreement_id, "Cy Requester", (), str(env["agreements"]))
    with pytest.raises(ReleaseFailed, match="clinical/hes_op does not exist"):
        release(spark, env["store"], Settings(keys=env["keys"]), str(env["root"] / "partial"), request,
                env["root"] / "out", today=RELEASE_DATE)
    assert list((env["root"] / "out" / agreement_id).iterdir()) == []  # no final, no partial folder
    rows = env["store"].read(table_path(str(env["root"] / "partial"), AUDIT)).orderBy("at").collect()
    assert [r.outcome for r in rows] == ["started", "failed"]


def test_second_release_same_pseudonyms_no_key_in_plans_or_event_log(
    spark, env, amber, event_log  # noqa: F811
) -> None:
    """Stability across releases, and the keys (pseudonym master, derived, vault for
    year_of_birth) nowhere in the plans or event log of a whole release."""
    again = run(env, spark, "AMBER-1")
    first, second = (delivered(r, env["recipients"]["leeds"]) for r in (amber, again))
    assert again.release_id != amber.release_id
    for name in AMBER_FIELDS:
        assert sorted((r[PERSON], r[RECORD]) for r in first[name]) == sorted(
            (r[PERSON], r[RECORD]) for r in second[name]
        )
    agreement = load_agreement("AMBER-1", env["agreements"])
    master = str(key_path(env["keys"], Role.PSEUDONYM))
    rows = released_rows(
        env["store"].read(table_path(env["warehouse"], clinical("gp_events"))), DATASETS["gp_events"], agreement,
        Sources(links=env["store"].read(table_path(env["warehouse"], "linkage/link_map")), objectors=None,
                vault=None, ledger=env["store"].read(table_path(env["warehouse"], SUBMISSIONS)),
                pseudonym_key=agreement_key(spark, master, agreement), vault_key=None),
    )
    rows.collect()
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()  # type: ignore[union-attr]
    logged = "".join(p.read_text(encoding="latin-1") for p in event_log.rglob("*") if p.is_file())
    assert "SparkListenerSQLExecutionStart" in logged and "pseudonym.key" in logged
    secrets = [
        *secrets_of(key_path(env["keys"], Role.PSEUDONYM).read_bytes()),
        *secrets_of(key_path(env["keys"], Role.VAULT).read_bytes()),
        *secrets_of(derived_key(env)),
    ]
    for text in (plan_text(rows), logged):
        assert not any(s in text for s in secrets)


def test_command_line_refusal(env, tmp_path, capsys) -> None:
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"keys": {"directory": env["keys"].directory}}))
    agreement_id = write_agreement(env, "CLI-EXPIRED", end=dt.date(2020, 1, 1), start=dt.date(2019, 1, 1),
                                   destroy_by=dt.date(2020, 6, 1))
    code = main(["--conf", str(conf), "--warehouse", env["warehouse"], "release", "--agreement", agreement_id,
                 "--requester", "Cy Requester", "--out", str(tmp_path / "out"), "--agreements", str(env["agreements"])])
    assert code == 3
    assert "expired on 2020-01-01" in capsys.readouterr().err


# --- objector exclusion as a property ---------------------------------------------------------

STATUSES = st.sampled_from(["dissent", "withdrawn"])
DAYS = st.integers(min_value=-40, max_value=40)  # around the release date
GP_KEY = st.tuples(  # one GP key of a person: linked?, its type 2 codes (status, day)
    st.booleans(), st.lists(st.tuples(STATUSES, DAYS), max_size=3)
)
PERSON_HISTORY = st.tuples(  # in the person index?, the person's GP keys
    st.booleans(), st.lists(GP_KEY, min_size=1, max_size=2)
)
History = list[tuple[bool, list[tuple[bool, list[tuple[str, int]]]]]]


def model_objectors(people: History) -> set[str]:
    """The rule in plain Python: per person, the latest code on or before day 0 decides;
    on one day a dissent outranks a withdrawal. Each person is one NHS number, whether or not
    their GP keys are linked (a type 1 objector's never are) or they are in the index."""
    out = set()
    for p, (_, keys) in enumerate(people):
        codes = [(day, status == "dissent") for _, events in keys for status, day in events if day <= 0]
        if codes and max(codes)[1]:
            out.add(f"p{p}")
    return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(PERSON_HISTORY, min_size=1, max_size=5))
def test_objector_exclusion_property(spark: SparkSession, people: History) -> None:
    """Whether a person's GP keys reach the link map, and whether the person index holds
    their number, changes nothing: their hospital records go exactly when they do not object."""
    def nhs(p: int) -> bytes:
        return f"nhs-{p}".encode()

    links = [("gp", f"p{p}/k{k}", f"p{p}") for p, (_, keys) in enumerate(people)
             for k, (linked, _) in enumerate(keys) if linked]
    links += [("hes_apc", f"EPI{p}", f"p{p}") for p in range(len(people))] + [("hes_apc", "EPI-unlinked", None)]
    events = [
        (f"p{p}/k{k}", 2, status, RELEASE_DATE + dt.timedelta(days=day), "s", nhs(p))
        for p, (_, keys) in enumerate(people) for k, (_, codes) in enumerate(keys) for status, day in codes
    ]
    index = [(f"p{p}", nhs(p)) for p, (indexed, _) in enumerate(people) if indexed]
    records = [(f"EPI{p}", nhs(p)) for p in range(len(people))] + [("EPI-unlinked", None)]
    link_frame: DataFrame = spark.createDataFrame(links, "source string, record_key string, person_id string")
    event_frame = spark.createDataFrame(
        events, "record_key string, objection_type int, status string, event_date date, submission_id string, "
        "h_nhs binary",
    )
    numbers = spark.createDataFrame(index, "person_id string, h_nhs binary")
    objectors = event_frame.transform(type2_objectors(link_frame, numbers, RELEASE_DATE))
    released = (
        spark.createDataFrame(records, "record_key string, h_nhs binary")
        .transform(not_of_objecting_numbers(objectors))
        .join(link_frame.transform(eligible("hes_apc", objectors)), on="record_key", how="inner")
        .collect()
    )
    excluded = model_objectors(people)
    assert {r.person_id for r in released} == {f"p{p}" for p in range(len(people))} - excluded
