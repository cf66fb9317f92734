"""Ingest end to end on hand-written landing zones: real files, real keys, real Delta."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F
from ingest_data import TYPE1_NHS, VALID_NHS, run, write

from caredata_spark.cli import main
from caredata_spark.config import DEFAULT_CONF, ConfigError, Settings
from caredata_spark.contract import DATASETS
from caredata_spark.envelope import encrypt_file
from caredata_spark.errors import UsageError
from caredata_spark.identity import generalised
from caredata_spark.ingest import ingest, line_if_rejected, one_per_record
from caredata_spark.keyed_hash import key_frame
from caredata_spark.keys import Role, generate_keys, key_path, load_public_key
from caredata_spark.landing import discover
from caredata_spark.objections import EVENTS_SCHEMA, objection_history
from caredata_spark.organisations import load_register
from caredata_spark.parsing import malformed
from caredata_spark.quarantine import quarantine_rows
from caredata_spark.tables import (
    AUDIT,
    DATA_QUALITY,
    IDENTITY_VAULT,
    OBJECTIONS,
    QUARANTINE,
    SUBMISSIONS,
    clinical,
    table_path,
)

AE_HEADER = "AEKEY,PROCODE,NEWNHSNO,DOB,SEX,HOMEADD,ARRIVALDATE,AEATTENDDISP,DIAG_01"
DIRTY_AE = [
    f"AE1,RTH,{VALID_NHS},1980-05-04,1,ls1 4ab,2024-01-02,01,S720",  # clean
    "AE2,RTH,9876544321,1900-01-01,2,ZZ99 3VZ,2024-01-03,02,",  # bad check, placeholder DOB
    "AE3,RTH,,1975-13-01,3,LS1  4AB,2024-01-09,01,J45X",  # bad DOB, bad sex: repaired
    f"AE1,RTH,{VALID_NHS},1980-05-04,1,LS14AB,2024-01-02,01,S720",  # duplicate key
    f'AE4,RTH,"{VALID_NHS}",1980-05-04,1,LS1 4AB,2024-01-05,01,"I10",extra',  # extra field
    f"AE5,RTH,{VALID_NHS},1980-05-04,1,LS1 4AB",  # missing fields
    "AE6,RTH,1111111111,1980-05-04,2,LS1 4AB,2024-02-30,01,I10",  # impossible date
    ",RTH,9434765919,1980-05-04,2,LS1 4AB,2024-02-01,01,I10",  # no key
    f"AE8,RXX,{VALID_NHS},1980-05-04,1,LS1 4AB,2024-02-01,01,I10",  # another trust's row
    "",  # blank line
    f'AE7,RTH,{VALID_NHS},1980-05-04,1,"LS1 4AB,2024-02-01,01,I1',  # truncated last line
]


def test_every_row_is_accounted_for(spark, delta_rs, keys, tmp_path) -> None:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    path = landing / "hes_ae" / "RTH" / "ae.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join([AE_HEADER, *DIRTY_AE]), encoding="utf-8")  # last line unterminated

    result = run(spark, delta_rs, keys, landing, warehouse)

    (counts,) = result.counts.values()
    assert counts == {"read": 11, "accepted": 3, "quarantined": 8, "dropped": 0}
    quarantine = delta_rs.read(table_path(str(warehouse), QUARANTINE))
    by_line = {r["line_number"]: r["reason"] for r in quarantine.collect()}
    assert 2 not in by_line and 3 not in by_line and 4 not in by_line  # repairable: kept
    assert by_line[5] == "DUPLICATE_KEY"
    assert by_line[6] == "MALFORMED_ROW" and by_line[7] == "MALFORMED_ROW"
    assert by_line[8] == "DATE_BAD:ARRIVALDATE"
    assert by_line[9] == "REQUIRED_MISSING:AEKEY"
    assert by_line[10] == "PROVIDER_NOT_SUBMITTER:PROCODE"
    assert by_line[11] == "MALFORMED_ROW" and by_line[12] == "MALFORMED_ROW"
    assert {r["file"] for r in quarantine.collect()} == {str(path)}
    accepted = delta_rs.read(table_path(str(warehouse), clinical("hes_ae")))
    assert sorted(r["record_key"] for r in accepted.collect()) == ["AE1", "AE2", "AE3"]
    ae2 = accepted.filter(F.col("record_key") == "AE2").first()
    assert {"NHS_BAD_CHECK", "DOB_PLACEHOLDER", "POSTCODE_PSEUDO"} <= set(ae2["dq_flags"])
    assert ae2["h_nhs"] is None and ae2["h_postcode"] is None
    assert len(ae2["h_nhs_del"]) == 10  # a check-digit failure may be one mistyped digit
    ae3 = accepted.filter(F.col("record_key") == "AE3").first()
    assert "DOB_BAD_DATE" in ae3["dq_flags"] and "SEX_BAD_CODE" in ae3["dq_flags"]
    assert ae3["h_dob"] is None and ae3["h_nhs"] is None
    dob_hashes = ("h_dob", "h_dob_swap", "h_dob_ym", "h_dob_yd", "h_dob_md")
    # no DOB, no DOB part: a shared hash of '' made every two missing DOBs agree partially
    assert [ae[c] for ae in (ae2, ae3) for c in dob_hashes] == [None] * 10
    ledger = delta_rs.read(table_path(str(warehouse), SUBMISSIONS)).first()
    assert (ledger["rows_read"], ledger["rows_accepted"], ledger["rows_quarantined"]) == (11, 3, 8)


def test_no_clear_identifier_anywhere_in_the_warehouse(spark, delta_rs, keys, tmp_path) -> None:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    write(landing, "hes_ae", "RTH", "ae.csv", [AE_HEADER, *DIRTY_AE[:-1]])
    write(landing, "gp_events", "A81001", "events.csv", [
        "PRACTICE_CODE,PATIENT_ID,NHS_NUMBER,DOB,SEX,POSTCODE,EVENT_DATE,SNOMED_CODE,VALUE",
        # PATIENT_ID missing: the NHS number sits where the key's patient id would be
        f"A81001,{VALID_NHS},1980-05-04,1,LS1 4AB,2024-01-01,44054006,",
    ])
    run(spark, delta_rs, keys, landing, warehouse)
    malformed_gp = delta_rs.read(table_path(str(warehouse), QUARANTINE)).filter(F.col("dataset") == "gp_events")
    assert [(r["reason"], r["record_key"]) for r in malformed_gp.collect()] == [("MALFORMED_ROW", None)]
    for path in warehouse.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert VALID_NHS.encode() not in content, path
            assert b"1980-05-04" not in content, path
            assert b"LS1 4AB" not in content, path


def test_type1_objector_is_dropped_before_anything_is_written(spark, delta_rs, keys, tmp_path) -> None:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    write(landing, "gp_patients", "A81001", "patients.csv", [
        "PATIENT_ID,PRACTICE_CODE,NHS_NUMBER,DOB,SEX,POSTCODE,REG_DATE,DEREG_DATE,EXTRA",
        f"P1,A81001,{VALID_NHS},1980-05-04,1,LS1 4AB,2010-01-01,,x",
        f"P2,A81001,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2011-03-04,,y",
        f"P2,A81001,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2011-03-04,,duplicate",
    ])
    write(landing, "gp_events", "A81001", "events.csv", [
        "PRACTICE_CODE,PATIENT_ID,NHS_NUMBER,DOB,SEX,POSTCODE,EVENT_DATE,SNOMED_CODE,VALUE",
        f"A81001,P1,{VALID_NHS},1980-05-04,1,LS1 4AB,2024-01-01,44054006,7.5",
        # the dissent's practice code in lower case: still the same record, still dropped
        f"a81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2023-01-01,827241000000103,",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2023-02-01,38341003,abc",
        f"A81001,P1,{VALID_NHS},1980-05-04,1,LS1 4AB,2024-02-01,881561000000100,",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2023-03-01",  # malformed, yet P2's: dropped
    ])
    result = run(spark, delta_rs, keys, landing, warehouse)
    dropped = sum(c["dropped"] for c in result.counts.values())
    assert dropped == 5  # two registrations (one a duplicate), two events and a malformed line of P2
    wh = str(warehouse)
    assert delta_rs.read(table_path(wh, clinical("gp_patients"))).select("record_key").collect() == [("A81001/P1",)]
    assert {r[0] for r in delta_rs.read(table_path(wh, clinical("gp_events"))).select("record_key").collect()} == {"A81001/P1"}
    assert delta_rs.read(table_path(wh, QUARANTINE)).filter(F.col("submission_id").isNotNull()).filter(
        F.col("line_number") == 4).count() == 0  # the duplicate of P2 is dropped, not quarantined
    assert {r[0] for r in delta_rs.read(table_path(wh, IDENTITY_VAULT)).select("record_key").collect()} == {"A81001/P1"}
    events = delta_rs.read(table_path(wh, OBJECTIONS))
    assert {(r["record_key"], r["objection_type"]) for r in events.collect()} == {("A81001/P2", 1), ("A81001/P1", 2)}
    assert events.filter(F.col("h_nhs").isNull()).count() == 0  # a type 2 objection must reach hospital records
    quality = delta_rs.read(table_path(wh, DATA_QUALITY))
    assert quality.filter((F.col("kind") == "dropped")).agg(F.sum("rows")).first()[0] == 5
    assert delta_rs.read(table_path(wh, QUARANTINE)).count() == 0  # nothing of P2's kept, encrypted or not

    # a later extract of the objector is dropped too: the objection is remembered
    write(landing, "gp_patients", "A81001", "patients-feb.csv", [
        "PRACTICE_CODE,PATIENT_ID,NHS_NUMBER,DOB,SEX,POSTCODE,REG_DATE,DEREG_DATE",
        f"A81001,P2,{TYPE1_NHS},1990-03-01,2,LS2 7EE,2011-03-04,",
    ])
    later = run(spark, delta_rs, keys, landing, warehouse)
    assert list(later.counts.values()) == [{"read": 1, "accepted": 0, "quarantined": 0, "dropped": 1}]


def test_objections_ingested_before_the_nhs_hash_read_it_as_null(spark, delta_rs, tmp_path) -> None:
    """A warehouse whose objections table predates `h_nhs` still reads (the next ingest
    adds the column: `add_columns`)."""
    legacy = spark.createDataFrame(
        [("A81001/P1", 2, "dissent", dt.date(2024, 1, 1), "s1", 1)],
        "record_key string, objection_type int, status string, event_date date, submission_id string, run_id long",
    )
    delta_rs.write(legacy, table_path(str(tmp_path), OBJECTIONS))
    events = objection_history(delta_rs, str(tmp_path))
    assert_df_equality(
        events,
        spark.createDataFrame([("A81001/P1", 2, "dissent", dt.date(2024, 1, 1), "s1", None)], EVENTS_SCHEMA),
        ignore_nullable=True,
    )


def test_reading_quarantined_lines_in_clear_is_audited(spark, delta_rs, keys, tmp_path, capsys) -> None:
    """`caredata quarantine --decrypt` shows the raw line to a named operator, and the audit
    trail says who read how many lines (never their content)."""
    warehouse = str(tmp_path / "warehouse")
    vault_key = key_frame(spark, str(key_path(keys, Role.VAULT)), Role.VAULT)
    line = f"AE5,RTH,{VALID_NHS},1980-05-04,1,LS1 4AB"
    rejected = spark.createDataFrame(
        [("hes_ae", "RTH", "s1", "/landing/hes_ae/RTH/ae.csv", 7, None, line.encode(), ["MALFORMED_ROW"])],
        "dataset string, submitter string, submission_id string, path string, line_number long, "
        "record_key string, line binary, reasons array<string>",
    )
    delta_rs.write(rejected.transform(quarantine_rows(vault_key, 1)), table_path(warehouse, QUARANTINE))
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"keys": dataclasses.asdict(keys)}))
    command = ["--conf", str(conf), "--warehouse", warehouse, "quarantine", "--decrypt"]

    assert main(command) == 2  # no --requester: refused before anything is read
    assert "--requester" in capsys.readouterr().err
    assert main([*command, "--requester", "Dee Operator", "--reason", "MALFORMED_ROW"]) == 0
    assert line in capsys.readouterr().out
    trail = delta_rs.read(table_path(warehouse, AUDIT)).orderBy("at").collect()
    assert [(r.action, r.outcome, r.requester, r.rows) for r in trail] == [
        ("quarantine_decrypt", "started", "Dee Operator", None), ("quarantine_decrypt", "done", "Dee Operator", 1)
    ]
    assert trail[1].fields == ["reason=MALFORMED_ROW", "limit=20"]
    assert VALID_NHS not in str([r.asDict() for r in trail])


def test_reingest_adds_nothing_and_same_bytes_twice_is_one_submission(spark, delta_rs, keys, tmp_path) -> None:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    write(landing, "hes_ae", "RTH", "ae.csv", [AE_HEADER, *DIRTY_AE[:3]])
    write(landing, "hes_ae", "RTH", "ae-copy.csv", [AE_HEADER, *DIRTY_AE[:3]])
    first = run(spark, delta_rs, keys, landing, warehouse)
    assert first.files == 1
    table = table_path(str(warehouse), clinical("hes_ae"))
    version = delta_rs.version(table)
    second = run(spark, delta_rs, keys, landing, warehouse)
    assert second.files == 0
    assert delta_rs.version(table) == version
    assert delta_rs.read(table).count() == 3


def test_encrypted_submissions_and_refusals(spark, delta_rs, keys, tmp_path, caplog) -> None:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    plain = write(tmp_path / "outbox", "hes_ae", "RTH", "ae.csv", [AE_HEADER, *DIRTY_AE[:3]])
    public = load_public_key(Path(keys.directory) / "transport.pub")
    good = landing / "hes_ae" / "RTH" / "ae.csv.enc"
    good.parent.mkdir(parents=True)
    encrypt_file(plain, good, public)
    tampered = landing / "hes_ae" / "RXH" / "ae.csv.enc"
    tampered.parent.mkdir(parents=True)
    data = bytearray(good.read_bytes())
    data[-5] ^= 1
    tampered.write_bytes(bytes(data))
    other = tmp_path / "other-keys"
    generate_keys(other)
    wrong = landing / "hes_ae" / "RYY" / "ae.csv.enc"
    wrong.parent.mkdir(parents=True)
    encrypt_file(plain, wrong, load_public_key(other / "transport.pub"))
    write(landing, "hes_ae", "RZZ", "bad-header.csv", ["AEKEY,PROCODE", "A,B"])

    with caplog.at_level(logging.INFO, logger="caredata"):
        result = run(spark, delta_rs, keys, landing, warehouse)

    assert set(result.refused) == {str(tampered), str(wrong), str(landing / "hes_ae/RZZ/bad-header.csv")}
    assert "header lacks contract columns" in result.refused[str(landing / "hes_ae/RZZ/bad-header.csv")]
    assert delta_rs.read(table_path(str(warehouse), clinical("hes_ae"))).count() == 3
    ledger = {r["file"]: r["status"] for r in delta_rs.read(table_path(str(warehouse), SUBMISSIONS)).collect()}
    assert ledger[str(good)] == "ingested" and ledger[str(tampered)] == "refused"
    assert VALID_NHS not in caplog.text


def test_refused_files_are_read_again_only_when_an_operator_asks(spark, delta_rs, keys, tmp_path) -> None:
    """The platform held the wrong transport key, so a good envelope was refused. With the
    right key installed a plain run still skips it (same bytes, already in the ledger);
    `retry_refused` reads it, and refuses again a file whose fault is its own."""
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    plain = write(tmp_path / "outbox", "hes_ae", "RTH", "ae.csv", [AE_HEADER, *DIRTY_AE[:3]])
    envelope = landing / "hes_ae" / "RTH" / "ae.csv.enc"
    envelope.parent.mkdir(parents=True)
    encrypt_file(plain, envelope, load_public_key(Path(keys.directory) / "transport.pub"))
    bad = write(landing, "hes_ae", "RZZ", "bad-header.csv", ["AEKEY,PROCODE", "A,B"])
    mixed_up = tmp_path / "mixed-up-keys"  # the right keys, but another transport key
    shutil.copytree(keys.directory, mixed_up)
    generate_keys(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "transport.key", mixed_up / "transport.key")

    first = run(spark, delta_rs, dataclasses.replace(keys, directory=str(mixed_up)), landing, warehouse)
    assert set(first.refused) == {str(envelope), str(bad)}
    assert run(spark, delta_rs, keys, landing, warehouse).files == 0
    retried = ingest(spark, delta_rs, Settings(keys=keys), str(landing), str(warehouse), retry_refused=True)
    assert (retried.files, set(retried.refused)) == (2, {str(bad)})
    assert delta_rs.read(table_path(str(warehouse), clinical("hes_ae"))).count() == 3
    again = ingest(spark, delta_rs, Settings(keys=keys), str(landing), str(warehouse), retry_refused=True)
    assert (again.files, set(again.refused)) == (1, {str(bad)})  # the ingested one is not read twice
    ledger = delta_rs.read(table_path(str(warehouse), SUBMISSIONS)).filter(F.col("file") == str(envelope))
    assert [r["status"] for r in ledger.orderBy("run_id").collect()] == ["refused", "ingested"]


def test_a_submitter_the_register_does_not_hold_is_refused_unread(spark, delta_rs, keys, tmp_path) -> None:
    """A trust's files arrive before the register lists it: refused, then read once it is
    registered and an operator retries the refused files."""
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    write(landing, "hes_ae", "RTH", "ae.csv", [AE_HEADER, *DIRTY_AE[:3]])
    late = write(landing, "hes_ae", "RXH", "ae.csv", [AE_HEADER, "AE9,RXH,,1980-05-04,1,LS1 4AB,2024-01-02,01,I10"])
    register = tmp_path / "submitters.yaml"
    register.write_text("gp_practices: [A81001]\nhospital_providers: [RTH]\n")
    settings = Settings(keys=keys, submitters=str(register))
    first = ingest(spark, delta_rs, settings, str(landing), str(warehouse))
    assert first.refused == {str(late): f"submitter RXH is not a registered hospital provider (submitter register {register})"}
    clinical_ae = table_path(str(warehouse), clinical("hes_ae"))
    assert delta_rs.read(clinical_ae).count() == 3
    register.write_text("gp_practices: [A81001]\nhospital_providers: [RTH, rxh]\n")
    retried = ingest(spark, delta_rs, settings, str(landing), str(warehouse), retry_refused=True)
    assert (retried.files, retried.refused) == (1, {})
    assert delta_rs.read(clinical_ae).count() == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hospital_providers: [RTH, A81001]\n", r"hospital_providers\[1\]: 'A81001' is not an ODS code of a hospital provider"),
        ("gp_practices: [A8100]\n", r"gp_practices\[0\]: 'A8100' is not an ODS code of a GP practice"),
        ("gp_practices: A81001\n", "gp_practices: expected a list of ODS codes"),
        ("trusts: [RTH]\n", "trusts: unknown field"),
    ],
)
def test_a_bad_submitter_register_names_the_entry(tmp_path, text: str, message: str) -> None:
    register = tmp_path / "submitters.yaml"
    register.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_register(str(register))


def test_the_example_submitter_register_loads() -> None:
    register = load_register(str(DEFAULT_CONF.parent / "submitters.example.yaml"))
    assert register.refusal("gp_events", "A81001") is None and register.refusal("hes_apc", "RA2") is None
    assert "not a registered GP practice" in register.refusal("gp_patients", "RA0")


def test_parquet_submission_with_other_column_order_and_types(spark, delta_rs, keys, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    path = landing / "hes_ae" / "RTH" / "ae.parquet"
    path.parent.mkdir(parents=True)
    table = pa.table({
        "DIAG_01": ["S720", "bad!"], "AEKEY": ["P1", "P2"], "PROCODE": ["RTH", "RTH"],
        "NEWNHSNO": pa.array([int(VALID_NHS), None], pa.int64()), "DOB": ["1980-05-04", "1980-05-04"],
        "SEX": ["1", "2"], "HOMEADD": ["LS1 4AB", None], "ARRIVALDATE": ["2024-01-02", None],
        "AEATTENDDISP": ["01", "02"],
    })
    pq.write_table(table, path)
    result = run(spark, delta_rs, keys, landing, warehouse)
    assert list(result.counts.values()) == [{"read": 2, "accepted": 1, "quarantined": 1, "dropped": 0}]
    row = delta_rs.read(table_path(str(warehouse), clinical("hes_ae"))).first()
    assert row["record_key"] == "P1" and row["h_nhs"] is not None and row["DIAG_01"] == "S720"
    rejected = delta_rs.read(table_path(str(warehouse), QUARANTINE)).first()
    assert (rejected["line_number"], rejected["reason"]) == (2, "REQUIRED_MISSING:ARRIVALDATE")


CSV_FIELD = st.one_of(
    st.just(""), st.just(VALID_NHS), st.just("2024-01-02"), st.just("1"),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)


def rfc4180(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CSV_FIELD, min_size=0, max_size=12), min_size=1, max_size=60))
def test_fuzzed_rows_never_crash_and_nothing_is_lost(spark, delta_rs, keys, tmp_path_factory, rows) -> None:
    """Any text, quoted as RFC 4180 says (a field may hold newlines): one row read per row."""
    root = tmp_path_factory.mktemp("fuzz")
    lines = [",".join(map(rfc4180, row)) for row in rows]
    path = root / "landing" / "hes_ae" / "RTH" / "ae.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(("\n".join([AE_HEADER, *lines]) + "\n").encode("utf-8"))
    result = run(spark, delta_rs, keys, root / "landing", root / "warehouse")
    (counts,) = result.counts.values()
    assert counts["read"] == len(lines)
    assert counts["read"] == counts["accepted"] + counts["quarantined"]


def test_malformed_lines_are_found_with_and_without_quotes(spark) -> None:
    """Lines without a quote take the cheap comma split; quoted ones the regular expressions."""
    cases = [
        ("a,b,c", False), ("a,,", False), ("a,b", True), ("a,b,c,d", True), ("", True), ("   ", True),
        ('"a,b",c,d', False), ('"a,""b""",c,d', False), ('a,"b,c",d,e', True), ('"a,b,c', True),
    ]
    frame = spark.createDataFrame(cases, "line string, malformed boolean")
    actual = frame.select("line", malformed(F.col("line"), 3).alias("malformed"))
    assert_df_equality(actual, frame, ignore_row_order=True, ignore_nullable=True)


def test_generalised_attributes_come_from_the_validated_postcode(spark) -> None:
    """District and area of an address postcode in validation's 'OUT IN' form; none for a
    pseudo-postcode or no postcode; age in whole years at the activity."""
    rows = spark.createDataFrame(
        [
            (dt.date(2024, 5, 3), dt.date(1980, 5, 4), "LS1 4AB", False),
            (dt.date(2024, 5, 4), dt.date(1980, 5, 4), "W1A 0AX", False),
            (dt.date(2024, 5, 4), dt.date(1980, 5, 4), "ZZ99 3VZ", True),
            (dt.date(2024, 5, 4), None, None, None),
        ],
        "activity_date date, dob date, postcode string, pseudo_postcode boolean",
    )
    expected = spark.createDataFrame(
        [(43, "LS1", "LS"), (44, "W1A", "W"), (44, None, None), (None, None, None)],
        "age int, district string, area string",
    )
    actual = rows.transform(generalised()).select("age", "district", "area")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_one_per_record_dedups_only_datasets_whose_rows_share_keys(spark) -> None:
    rows = spark.createDataFrame(
        [("P/1", "s1", 2), ("P/1", "s1", 3), ("P/1", "s2", 2), ("P/2", "s1", 4)],
        "record_key string, submission_id string, line_number int",
    )

    events = rows.transform(one_per_record(DATASETS["gp_events"])).select("record_key", "submission_id")
    episodes = rows.transform(one_per_record(DATASETS["hes_apc"]))

    expected = spark.createDataFrame(
        [("P/1", "s1"), ("P/1", "s2"), ("P/2", "s1")], "record_key string, submission_id string"
    )
    assert_df_equality(events, expected, ignore_row_order=True)
    assert_df_equality(episodes, rows, ignore_row_order=True)


def test_line_is_kept_only_for_rejected_rows(spark) -> None:
    rows = spark.createDataFrame(
        [(2, b"ok,line", []), (3, b"bad,line", ["DATE_BAD:ADMIDATE"])],
        "line_number int, line binary, quarantine_reasons array<string>",
    )

    expected = spark.createDataFrame(
        [(2, None, []), (3, b"bad,line", ["DATE_BAD:ADMIDATE"])],
        "line_number int, line binary, quarantine_reasons array<string>",
    )
    assert_df_equality(rows.transform(line_if_rejected()), expected, ignore_row_order=True)


@pytest.mark.parametrize(
    ("landing", "message"),
    [("s3a://caredata-landing/", "a s3a:// URI cannot be read as files"), ("{tmp}/no-such-folder", "is not a folder")],
)
def test_a_landing_zone_that_cannot_be_read_is_an_error_not_an_empty_day(tmp_path, landing, message) -> None:
    with pytest.raises(UsageError, match=message) as refused:
        discover(landing.format(tmp=tmp_path))
    assert refused.value.exit_code == 2


def test_a_file_uri_landing_zone_is_a_folder(tmp_path) -> None:
    (tmp_path / "gp_events" / "A81001").mkdir(parents=True)
    (tmp_path / "gp_events" / "A81001" / "extract.csv").write_text("x\n")
    (tmp_path / "readme.txt").write_text("x")
    found, ignored = discover(f"file://{tmp_path}")
    assert [(f.dataset, f.submitter, f.format) for f in found] == [("gp_events", "A81001", "csv")]
    assert ignored == [str(tmp_path / "readme.txt")]
