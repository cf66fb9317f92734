"""Subject access on the hand-made warehouse: the person's every record, nobody else's."""

from __future__ import annotations

import copy
import datetime as dt
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession
from release_warehouse import DOB_A, NHS_A, NHS_B, NHS_E, RECORDS, build_warehouse, keys_of

from caredata_spark.agreements import ReleaseRefused
from caredata_spark.cli import main
from caredata_spark.config import Settings
from caredata_spark.errors import UsageError
from caredata_spark.storage import open_store
from caredata_spark.subject_access import (
    NO_MATCH,
    SubjectRecord,
    SubjectRequest,
    read_request,
    subject_record,
    to_html,
    write_record,
)
from caredata_spark.tables import AUDIT, table_path


@pytest.fixture(scope="module")
def env(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("subject")
    store = open_store(spark)
    keys = keys_of(root / "keys")
    build_warehouse(spark, store, root / "warehouse", keys)
    return {"root": root, "store": store, "settings": Settings(keys=keys), "warehouse": str(root / "warehouse")}


def ask(spark: SparkSession, env: dict[str, Any], nhs: str, dob: dt.date, out: Path | None = None) -> SubjectRecord:
    out = out or env["root"] / "sar" / uuid.uuid4().hex
    return subject_record(
        spark, env["store"], env["settings"], env["warehouse"], SubjectRequest(nhs, dob), "clerk", out
    )


def audit_rows(env: dict[str, Any]) -> list[Any]:
    return env["store"].read(table_path(env["warehouse"], AUDIT)).orderBy("at").collect()


@pytest.fixture(scope="module")
def record_a(spark: SparkSession, env: dict[str, Any]) -> SubjectRecord:
    return ask(spark, env, NHS_A, DOB_A)


def test_every_record_of_the_person_and_nobody_elses(record_a) -> None:
    returned = {(name, row["record_key"]) for name, rows in record_a.records.items() for row in rows}
    expected = {(r.dataset, r.record_key) for r in RECORDS if r.person_id == "pA"}
    assert returned == expected  # EPI7 (linked, no number) in; EPI8 (same number, other DOB) out
    assert len(record_a.records["gp_events"]) == 3
    assert {name for name, rows in record_a.records.items() if rows} == {
        "gp_patients", "gp_events", "hes_apc", "hes_op", "hes_ae"
    }


def test_identities_as_held_are_returned(record_a) -> None:
    assert {i["nhs_number"] for i in record_a.identities} == {NHS_A, None}  # EPI7 came without one
    assert {i["dob"] for i in record_a.identities} == {"1980-05-04"}


def test_objections_notwithstanding(spark, env) -> None:
    record = ask(spark, env, NHS_B, dt.date(1975, 2, 2))  # pB has a type 2 dissent in force
    assert {row["record_key"] for rows in record.records.values() for row in rows} == {"A81001/2", "EPI2"}


def test_number_and_dob_absent_from_the_event_log(spark, env, event_log) -> None:  # noqa: F811
    record = ask(spark, env, NHS_E, dt.date(2001, 12, 1))
    assert record.rows == 1
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()  # type: ignore[union-attr]
    logged = "".join(p.read_text(encoding="latin-1") for p in event_log.rglob("*") if p.is_file())
    assert "SparkListenerSQLExecutionStart" in logged
    assert NHS_E not in logged and "2001-12-01" not in logged


@pytest.mark.parametrize(
    ("nhs", "dob"),
    [
        pytest.param(NHS_A, dt.date(1980, 5, 5), id="wrong-dob"),
        pytest.param(NHS_E, DOB_A, id="someone-elses-dob"),
        pytest.param("4010232138", DOB_A, id="invalid-number"),
        pytest.param("9990000018", DOB_A, id="unknown-number"),
    ],
)
def test_mismatch_is_refused_with_one_message_and_audited(spark, env, nhs, dob) -> None:
    with pytest.raises(ReleaseRefused) as refused:
        ask(spark, env, nhs, dob)
    assert str(refused.value) == NO_MATCH
    last = audit_rows(env)[-1]
    assert (last.action, last.outcome, last.reason) == ("subject_access", "refused", NO_MATCH)
    assert nhs not in json.dumps(last.asDict(), default=str)


def test_done_access_is_audited_by_hash_not_number(env, record_a) -> None:
    done = [r for r in audit_rows(env) if r.outcome == "done"]
    assert done and done[0].rows == record_a.rows and done[0].requester == "clerk"
    assert len(done[0].subject) == 32 and NHS_A not in json.dumps(done[0].asDict(), default=str)


def test_an_access_not_delivered_is_audited_failed_not_done(spark, env, tmp_path) -> None:
    """Done means the files were written: an `--out` already holding a record stops the
    request before anything is read, and the trail says started, then failed."""
    (tmp_path / "record.json").write_text("{}")
    before = len(audit_rows(env))
    with pytest.raises(UsageError, match="already holds record.json"):
        ask(spark, env, NHS_A, DOB_A, out=tmp_path)
    assert [(r.outcome, r.reason) for r in audit_rows(env)[before:]] == [
        ("started", None), ("failed", f"--out {tmp_path} already holds record.json: name a new folder")
    ]
    assert (tmp_path / "record.json").read_text() == "{}"


def test_html_and_json_documents(record_a, tmp_path) -> None:
    record = copy.deepcopy(record_a)
    record.records["gp_events"][0]["SNOMED_CODE"] = "<script>alert(1)</script>"
    page = to_html(record)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Hospital admissions (episodes) (2)" in page and "A&amp;E attendances (1)" in page
    json_path, html_path = write_record(record, tmp_path / "out")
    assert json.loads(json_path.read_text())["records"]["hes_ae"][0]["record_key"] == "AE1"
    for path in (json_path, html_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_request_file(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"nhs_number": NHS_A, "dob": "1980-05-04"}))
    assert read_request(str(good)) == SubjectRequest(NHS_A, DOB_A)
    assert NHS_A not in repr(read_request(str(good)))
    for bad in ({"nhs_number": NHS_A}, {"nhs_number": NHS_A, "dob": "04/05/1980"}, ["x"]):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(UsageError):
            read_request(str(path))


def test_command_line(env, tmp_path, capsys) -> None:
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"keys": {"directory": env["settings"].keys.directory,
                                             "linkage_env": "NO_SUCH_ENV_1", "vault_env": "NO_SUCH_ENV_2"}}))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"nhs_number": NHS_E, "dob": "2001-12-01"}))
    code = main(["--conf", str(conf), "--warehouse", env["warehouse"], "subject-access", "--request", str(request),
                 "--requester", "clerk", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    written = json.loads((tmp_path / "out" / "record.json").read_text())
    assert [row["record_key"] for row in written["records"]["hes_apc"]] == ["EPI5"]
    assert NHS_E not in capsys.readouterr().out
