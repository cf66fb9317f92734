"""`caredata subject-access`: a patient's whole linked record, for the patient.

The request names an NHS number and a date of birth. The number is hashed with the
linkage key exactly as ingest hashed it (`identity.with_nhs_hash`), the vault rows with
that hash are found, and their dates of birth decrypted and compared: only records whose
number and date of birth both match verify the request. From them the link map gives the
person, and the person every record of every source (GP registrations and events, every
hospital episode, appointment and attendance). Records that match but are not yet linked
are included too; records linked to the person by someone else's number are the person's.

Objections do not apply: a patient always has the right to their own data. A request that
matches nothing is refused with one message whatever the cause, so the service never tells
whether an NHS number is known. Every request is audited, its subject named by the hex of
the NHS number's linkage hash, never by the number.

The request is read from a file (or stdin), never from the command line, so the number is
not left in shell history or the process list; the record is written as JSON and as a
readable HTML page, both private (0600).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import audit
from caredata_spark.agreements import ReleaseRefused, clinical_fields
from caredata_spark.cli import Command, Context
from caredata_spark.config import Settings
from caredata_spark.contract import DATASETS, Dataset
from caredata_spark.errors import UsageError
from caredata_spark.identifiers import clean_nhs_number
from caredata_spark.identity import IDENTITY_FIELDS, identity_in_clear, with_nhs_hash
from caredata_spark.keyed_hash import KeyFrame, key_frame, with_key_material
from caredata_spark.keys import Role, key_file
from caredata_spark.storage import DeltaStore
from caredata_spark.tables import IDENTITY_VAULT, LINK_MAP, clinical, table_path

NO_MATCH = "no record matches this NHS number and date of birth"
PRIVATE_FILE = 0o600


@dataclass(frozen=True)
class SubjectRequest:
    nhs_number: str = field(repr=False)
    dob: dt.date = field(repr=False)


@dataclass
class SubjectRecord:
    """Everything held about one person: identities as recorded, and records per dataset."""

    generated_at: str
    identities: list[dict[str, Any]]
    records: dict[str, list[dict[str, Any]]]

    @property
    def rows(self) -> int:
        return sum(len(r) for r in self.records.values())

    def to_json(self) -> str:
        return json.dumps(
            {"generated_at": self.generated_at, "identities": self.identities, "records": self.records},
            indent=2, default=str,
        )


def read_request(source: str) -> SubjectRequest:
    """A request file (YAML or JSON: `nhs_number`, `dob`), or `-` for stdin."""
    text = sys.stdin.read() if source == "-" else _read_text(source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise UsageError(f"request {source}: not YAML or JSON") from None
    if not isinstance(data, dict) or set(data) != {"nhs_number", "dob"}:
        raise UsageError(f"request {source}: expected exactly the fields nhs_number and dob")
    dob = data["dob"]
    if isinstance(dob, str):
        try:
            dob = dt.date.fromisoformat(dob)
        except ValueError:
            raise UsageError(f"request {source}: dob: expected YYYY-MM-DD") from None
    if not isinstance(dob, dt.date):
        raise UsageError(f"request {source}: dob: expected YYYY-MM-DD")
    return SubjectRequest(str(data["nhs_number"]), dob)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise UsageError(f"request {path}: cannot read") from None


def hashed_request(spark: SparkSession, request: SubjectRequest, linkage_key: KeyFrame) -> DataFrame:
    """One row (h_nhs, dob): the number hashed as ingest hashes it; the data, never a literal."""
    raw = spark.createDataFrame([(request.nhs_number, request.dob.isoformat())], "nhs_number string, dob string")
    return (
        raw.select(clean_nhs_number(F.col("nhs_number")).alias("nhs_number"), "dob")
        .transform(with_nhs_hash(linkage_key))
        .select("h_nhs", F.col("dob").alias("requested_dob"))
    )


def verified_keys(vault: DataFrame, request: DataFrame, vault_key: KeyFrame) -> DataFrame:
    """(source, record_key) of vault rows whose NHS number and date of birth both match.

    The request is one row, broadcast: the vault is scanned once and never shuffled.
    """
    matches = vault.join(F.broadcast(request), on="h_nhs", how="inner")
    dob = {"dob": identity_in_clear(vault_key)["dob"]}
    return (
        matches.transform(with_key_material(vault_key, dob))
        .filter(F.col("dob") == F.col("requested_dob"))
        .select("source", "record_key")
        .distinct()
    )


def person_keys(links: DataFrame, verified: DataFrame) -> DataFrame:
    """Every (source, record_key) of the persons the verified records belong to, and the
    verified records themselves (those not yet linked). One person's keys: small."""
    persons = (
        links.join(F.broadcast(verified), on=["source", "record_key"], how="left_semi")
        .filter(F.col("person_id").isNotNull())
        .select("person_id")
        .distinct()
    )
    linked = links.join(F.broadcast(persons), on="person_id", how="left_semi").select("source", "record_key")
    return linked.unionByName(verified).distinct()


def _records(table: DataFrame, dataset: Dataset, keys: DataFrame) -> list[dict[str, Any]]:
    """The person's rows of one dataset, oldest first; one person's, so collected."""
    own = keys.filter(F.col("source") == dataset.source).select("record_key")
    columns = ["record_key", "provider", *clinical_fields(dataset)]
    rows = (
        table.join(F.broadcast(own), on="record_key", how="left_semi")
        .select(*columns)
        .orderBy(dataset.activity_date, "record_key")
        .collect()
    )
    return [{c: row[c] for c in columns} for row in rows]


def _identities(vault: DataFrame, keys: DataFrame, vault_key: KeyFrame) -> list[dict[str, Any]]:
    """The distinct identifiers the records carried, in clear: what the haven holds."""
    rows = (
        vault.join(F.broadcast(keys), on=["source", "record_key"], how="left_semi")
        .transform(with_key_material(vault_key, {"identity": identity_in_clear(vault_key)}))
        .select(*[F.col("identity")[name].alias(name) for name in IDENTITY_FIELDS])
        .distinct()
        .orderBy(*IDENTITY_FIELDS)
        .collect()
    )
    return [row.asDict() for row in rows]


@contextmanager
def _keys(spark: SparkSession, settings: Settings) -> Iterator[tuple[KeyFrame, KeyFrame]]:
    with ExitStack() as stack:
        linkage = stack.enter_context(key_file(settings.keys, Role.LINKAGE))
        vault = stack.enter_context(key_file(settings.keys, Role.VAULT))
        yield key_frame(spark, str(linkage), Role.LINKAGE), key_frame(spark, str(vault), Role.VAULT)


def subject_record(
    spark: SparkSession, store: DeltaStore, settings: Settings, warehouse: str,
    request: SubjectRequest, requester: str, out: Path,
) -> SubjectRecord:
    """The person's whole record, written to `out` (`write_record`), or
    `ReleaseRefused(NO_MATCH)`. Audited as started, then done once the files are written,
    refused, or failed (an error part-way, or `out` already holding a record)."""
    entry = audit.AuditEntry(at=audit.now(), action=audit.SUBJECT_ACCESS, outcome=audit.STARTED, requester=requester)
    refused: audit.AuditEntry | None = None
    with audit.audited(spark, store, warehouse, entry), ExitStack() as cached:
        taken = [p for p in record_paths(out) if p.exists()]
        if taken:
            raise UsageError(f"--out {out} already holds {taken[0].name}: name a new folder")
        vault = store.read(table_path(warehouse, IDENTITY_VAULT))
        links = store.read(table_path(warehouse, LINK_MAP)).select("source", "record_key", "person_id")
        linkage_key, vault_key = cached.enter_context(_keys(spark, settings))

        def kept(df: DataFrame) -> DataFrame:
            cached.callback(df.unpersist)
            return df.cache()

        hashed = kept(hashed_request(spark, request, linkage_key))
        first = hashed.first()
        subject = first["h_nhs"].hex() if first and first["h_nhs"] else None
        verified = kept(verified_keys(vault, hashed, vault_key))
        if subject is None or verified.isEmpty():
            refused = audit.stamped(entry, outcome=audit.REFUSED, reason=NO_MATCH, subject=subject)
        else:
            keys = kept(person_keys(links, verified))
            record = SubjectRecord(
                generated_at=audit.now().isoformat(timespec="seconds") + "Z",
                identities=_identities(vault, keys, vault_key),
                records={
                    name: _records(store.read(table_path(warehouse, clinical(name))), dataset, keys)
                    for name, dataset in DATASETS.items()
                    if store.exists(table_path(warehouse, clinical(name)))
                },
            )
            write_record(record, out)
    if refused is not None:
        audit.record(spark, store, warehouse, refused)
        raise ReleaseRefused(NO_MATCH)
    audit.record(spark, store, warehouse, audit.stamped(entry, outcome=audit.DONE, rows=record.rows, subject=subject))
    return record


# --- the document ---------------------------------------------------------------------------

TITLES = {
    "gp_patients": "GP registrations",
    "gp_events": "GP record entries",
    "hes_apc": "Hospital admissions (episodes)",
    "hes_op": "Outpatient appointments",
    "hes_ae": "A&E attendances",
}
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#212b32}"
    "table{border-collapse:collapse;margin-bottom:2em}th,td{border:1px solid #aeb7bd;"
    "padding:.3em .6em;text-align:left}th{background:#e8edee}"
)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>None held.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(record: SubjectRecord) -> str:
    """A self-contained page a patient can read: every value escaped, no external content."""
    sections = "".join(
        f"<h2>{html.escape(TITLES[name])} ({len(rows)})</h2>{_table(rows)}"
        for name, rows in record.records.items()
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Your health record</title><style>{STYLE}</style></head><body>"
        "<h1>Your health record</h1>"
        f"<p>Everything the safe haven holds about you, as of {html.escape(record.generated_at)}.</p>"
        f"<h2>How you are identified in our records</h2>{_table(record.identities)}"
        f"{sections}</body></html>"
    )


def record_paths(out: Path) -> tuple[Path, Path]:
    return out / "record.json", out / "record.html"


def write_record(record: SubjectRecord, out: Path) -> tuple[Path, Path]:
    """`record.json` and `record.html` in `out`, readable by their owner only."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = record_paths(out)
    for path, text in zip(paths, (record.to_json(), to_html(record))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
    return paths


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--request", required=True, help="file with nhs_number and dob (YAML/JSON), or - for stdin")
    parser.add_argument("--requester", required=True, help="who handles the request (audited)")
    parser.add_argument("--out", required=True, help="new folder for record.json and record.html")


def _run(context: Context, args: argparse.Namespace) -> None:
    request = read_request(args.request)
    out = Path(args.out)
    record = subject_record(
        context.spark, context.store, context.settings, context.require("warehouse"), request, args.requester, out
    )
    json_path, html_path = record_paths(out)
    print(f"subject access: {record.rows} records written to {json_path} and {html_path}")


COMMAND = Command(
    name="subject-access",
    help="a patient's whole linked record as HTML and JSON (NHS number checked against DOB)",
    add_arguments=_add_arguments,
    run=_run,
)
