"""Agreement files: validated on load with the field named; request checks; the examples."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from caredata_spark.agreements import (
    DEFAULT_DIRECTORY,
    Agreement,
    ReleaseRefused,
    check_request,
    load_agreement,
)
from caredata_spark.config import ConfigError
from caredata_spark.pseudonymisation import key_info

BASE: dict[str, Any] = {
    "id": "DSA-1",
    "recipient": {"organisation": "University of Leeds", "public_key": "leeds.pub"},
    "purpose": "Diabetes outcomes",
    "flow": "amber",
    "datasets": {"hes_apc": ["ADMIDATE", "DIAG_01", "age", "district"]},
    "start": dt.date(2025, 1, 1),
    "end": dt.date(2025, 12, 31),
    "territory": "England",
    "destroy_by": dt.date(2026, 12, 31),
}


def write(directory: Path, **changes: Any) -> str:
    data = {**BASE, **changes}
    (directory / f"{data['id']}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(data["id"])


def test_loads_and_resolves_the_key_beside_the_file(tmp_path: Path) -> None:
    agreement = load_agreement(write(tmp_path), tmp_path)
    assert isinstance(agreement, Agreement)
    assert agreement.recipient.public_key == str(tmp_path / "leeds.pub")
    assert agreement.fields() == ["hes_apc.ADMIDATE", "hes_apc.DIAG_01", "hes_apc.age", "hes_apc.district"]
    assert not agreement.overrides_objections


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"flow": "green"}, "flow: expected amber or red"),
        ({"datasets": {"hes_xx": ["age"]}}, "datasets.hes_xx: unknown dataset"),
        ({"datasets": {"hes_apc": ["age", "NEWNHSNO"]}}, r"datasets.hes_apc\[1\]: 'NEWNHSNO' cannot be released"),
        ({"datasets": {"hes_apc": ["EPIKEY"]}}, r"datasets.hes_apc\[0\]: 'EPIKEY' cannot be released"),
        ({"datasets": {"gp_events": ["dob"]}}, r"datasets.gp_events\[0\]: dob is identifiable: red flow only"),
        ({"datasets": {"gp_events": ["VALUE", "VALUE"]}}, "a field is listed twice"),
        ({"datasets": {}}, "datasets: at least one dataset"),
        ({"end": dt.date(2024, 1, 1)}, "end: 2024-01-01 is before start"),
        ({"destroy_by": dt.date(2025, 6, 1)}, "destroy_by: 2025-06-01 is before end"),
        ({"dates": "week"}, "dates: expected day or month"),
        ({"start": "soon"}, "start: expected date"),
        ({"legal_basis": {"kind": "s251"}}, "legal_basis.reference: an s251 basis needs"),
        ({"legal_basis": {"kind": "vibes"}}, "legal_basis.kind: expected one of"),
        ({"recipient": {"organisation": "X"}}, "recipient.public_key: required field is missing"),
        ({"purpose": "  "}, "purpose: must not be empty"),
        ({"k_threshold": 1}, "k_threshold: expected at least 2"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"id": "OTHER"}, "id: 'OTHER' differs from the file name"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    data = {**BASE, **changes}
    (tmp_path / "DSA-1.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_agreement("DSA-1", tmp_path)
    assert str(tmp_path / "DSA-1.yaml") in str(err.value)


@pytest.mark.parametrize("bad_id", ["", "../etc/passwd", ".hidden"])
def test_agreement_id_is_a_plain_file_name(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(ConfigError, match="is not a file name"):
        load_agreement(bad_id, tmp_path)


def test_missing_agreement(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such agreement"):
        load_agreement("DSA-404", tmp_path)


RED = {"flow": "red", "legal_basis": {"kind": "s251", "reference": "CAG 1"}, "approvers": ["Ann", "Bob", "Cy"]}


@pytest.mark.parametrize(
    ("changes", "today", "requester", "approvers", "reason"),
    [
        ({}, dt.date(2024, 12, 31), "Cy", [], "starts on 2025-01-01"),
        ({}, dt.date(2026, 1, 1), "Cy", [], "expired on 2025-12-31"),
        ({}, dt.date(2025, 6, 1), " ", [], "the requester must be named"),
        ({"flow": "red"}, dt.date(2025, 6, 1), "Cy", ["Ann", "Bob"], "no legal basis"),
        ({**RED, "legal_basis": {"kind": "public_task"}}, dt.date(2025, 6, 1), "Cy", ["Ann", "Bob"], "no legal basis"),
        (RED, dt.date(2025, 6, 1), "Cy", ["Ann"], "two distinct approvers"),
        (RED, dt.date(2025, 6, 1), "Cy", ["Ann", "Ann"], "two distinct approvers"),
        (RED, dt.date(2025, 6, 1), "Cy", ["Ann", "Cy"], "cannot approve their own"),
        (RED, dt.date(2025, 6, 1), "Cy", ["Ann", "Mallory"], "not approvers of agreement DSA-1: Mallory"),
    ],
)
def test_requests_refused(
    tmp_path: Path, changes: dict[str, Any], today: dt.date, requester: str, approvers: list[str], reason: str
) -> None:
    agreement = load_agreement(write(tmp_path, **changes), tmp_path)
    with pytest.raises(ReleaseRefused, match=reason):
        check_request(agreement, today, requester, approvers)


@pytest.mark.parametrize("day", [dt.date(2025, 1, 1), dt.date(2025, 12, 31)])
def test_requests_permitted_on_the_first_and_last_day(tmp_path: Path, day: dt.date) -> None:
    amber = load_agreement(write(tmp_path), tmp_path)
    check_request(amber, day, "Cy", [])
    red = load_agreement(write(tmp_path, id="DSA-2", **RED), tmp_path)
    check_request(red, day, "Cy", ["Ann", "Bob"])
    assert not red.overrides_objections


def test_only_red_civil_emergency_overrides_objections(tmp_path: Path) -> None:
    emergency = {**RED, "legal_basis": {"kind": "civil_emergency"}}
    assert load_agreement(write(tmp_path, **emergency), tmp_path).overrides_objections
    amber_emergency = {"legal_basis": {"kind": "civil_emergency"}}
    assert not load_agreement(write(tmp_path, id="DSA-3", **amber_emergency), tmp_path).overrides_objections


def test_example_agreements_load() -> None:
    examples = sorted(p.stem for p in DEFAULT_DIRECTORY.glob("*.yaml"))
    loaded = {i: load_agreement(i) for i in examples}
    assert {a.flow for a in loaded.values()} == {"amber", "red"}
    expired = [a for a in loaded.values() if a.end < dt.date(2025, 1, 1)]
    assert expired, "one example shows an expired agreement"


def test_pseudonym_key_info_separates_recipients_and_purposes() -> None:
    infos = {
        key_info("Leeds", "Diabetes outcomes"),
        key_info("Leeds", "Diabetes  outcomes\n"),  # re-wrapped text: the same purpose
        key_info("Leeds", "Cancer outcomes"),
        key_info("Leeds Diabetes", "outcomes"),
    }
    assert len(infos) == 3
