"""`caredata release`: an amber or red extract under a data sharing agreement.

For each dataset the agreement names, a release is the dataset's clinical rows joined to
their person through the link map, less every type 2 objector, reduced to the agreed
fields at the agreed precision, with person and record keys replaced by the agreement's
pseudonyms. Red releases add identifiers decrypted from the vault.

Objections: a person is out when the latest type 2 code across all their GP records, on
the release date, is a dissent (a withdrawal recorded at a later practice ends an
objection recorded at an earlier one). Records that linkage could not tie to a person are
withheld too: nothing says whether their patient objected, and type 2 is a promise to the
patient, so doubt excludes. Only a red release under a civil emergency overrides
objections, and then unlinked records go out as well. Records linkage has not yet seen
(not in the link map) are never released: a release is only as fresh as the last link run.

Delivery: per dataset, CSV part files each encrypted to the recipient's public key (the
ingest envelope), and `manifest.json` (agreement, fields, rows, risk, SHA-256 of every
file). Everything is written in `.<release>.partial/` beside the final folder and renamed
into place last, so a failed release leaves nothing that looks delivered. Plaintext exists
only in that private staging folder, part by part, until its part is encrypted.

Audit: a `started` row (with the approvers) before any data is read, then `done` or
`failed`; a request the agreement does not permit leaves a `refused` row and nothing else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark import audit
from caredata_spark.agreements import MONTH, Agreement, ReleaseRefused, check_request, load_agreement
from caredata_spark.cli import Command, Context
from caredata_spark.config import ConfigError, Settings
from caredata_spark.contract import DATASETS, GP_EVENTS, Dataset
from caredata_spark.envelope import ENVELOPE_SUFFIX, encrypt_file
from caredata_spark.errors import CaredataError
from caredata_spark.identity import identity_in_clear
from caredata_spark.keyed_hash import KeyFrame, key_frame, with_key_material
from caredata_spark.keys import KeyMaterialError, Role, TransportPublicKey, key_file, load_public_key
from caredata_spark.objections import (
    EVENTS_COLUMNS,
    in_force,
    load_objection_codes,
    objection_history,
    without_objection_codes,
)
from caredata_spark.observability import get_logger, stage
from caredata_spark.pseudonymisation import PERSON, RECORD, agreement_key, pseudonyms
from caredata_spark.risk import RiskReport, quasi_identifiers, risk_report
from caredata_spark.storage import DeltaStore
from caredata_spark.submissions import latest_per_key
from caredata_spark.tables import IDENTITY_VAULT, LINK_MAP, PERSONS, RELEASE_RISK, SUBMISSIONS, clinical, table_path

LOG = get_logger("release")
GP_SOURCE = GP_EVENTS.source  # objections are GP events
TYPE2 = 2
VAULT_FIELDS = {"year_of_birth": "dob", "dob": "dob", "nhs_number": "nhs_number", "postcode": "postcode"}
MANIFEST = "manifest.json"
PRIVATE_DIR = 0o700


class ReleaseFailed(CaredataError):
    """A release could not run (a table or key missing); nothing was delivered."""


# --- objections and eligible records --------------------------------------------------------


def type2_objectors(links: DataFrame, numbers: DataFrame, as_of: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Objection events -> (person_id, h_nhs) of everyone whose latest type 2 code is a
    dissent: the persons to withhold, and the NHS number hashes whose records to withhold.

    An event belongs to the person its GP record links to; failing that (a type 1
    objector's GP rows never reach linkage, a purge removes them, a registration may not be
    linked yet), to every person of the person index holding its NHS number (`numbers`:
    person_id, h_nhs); failing that, to its NHS number alone. The latest code across all
    of a subject's events decides (`objections.in_force`, whose `record_key` here holds the
    subject). Shuffles on the record key, the NHS hash and the subject.
    """
    gp_persons = links.filter((F.col("source") == GP_SOURCE) & F.col("person_id").isNotNull()).select(
        "record_key", "person_id"
    )
    holders = numbers.filter(F.col("h_nhs").isNotNull()).select("h_nhs", "person_id").distinct()

    def transform(events: DataFrame) -> DataFrame:
        type2 = events.filter(F.col("objection_type") == TYPE2)
        linked = type2.join(gp_persons, on="record_key", how="inner")
        unlinked = type2.join(gp_persons, on="record_key", how="left_anti").filter(F.col("h_nhs").isNotNull())
        by_number = unlinked.join(holders, on="h_nhs", how="inner")
        number_only = unlinked.join(holders, on="h_nhs", how="left_anti").withColumn(
            "person_id", F.lit(None).cast("string")
        )
        subject = F.coalesce(F.col("person_id"), F.concat(F.lit("nhs:"), F.hex("h_nhs")))
        attributed = reduce(DataFrame.unionByName, [linked, by_number, number_only]).withColumn("subject", subject)
        objecting = (
            attributed.select(F.col("subject").alias("record_key"), *EVENTS_COLUMNS[1:])
            .transform(in_force(F.lit(as_of)))
            .select(F.col("record_key").alias("subject"))
        )
        return (
            attributed.join(objecting, on="subject", how="left_semi").select("person_id", "h_nhs").distinct()
        )

    return transform


def eligible(source: str, objectors: DataFrame | None) -> Callable[[DataFrame], DataFrame]:
    """Link rows of `source` that may be released: linked, and not of an objector.

    `objectors` None means objections are overridden (civil emergency): every record goes.
    Objectors are a few per cent of people: a shuffle anti-join, or AQE broadcasts them.
    """

    def transform(links: DataFrame) -> DataFrame:
        of_source = links.filter(F.col("source") == source)
        if objectors is None:
            return of_source
        linked = of_source.filter(F.col("person_id").isNotNull())
        persons = objectors.filter(F.col("person_id").isNotNull()).select("person_id")
        return linked.join(persons, on="person_id", how="left_anti")

    return transform


def not_of_objecting_numbers(objectors: DataFrame | None) -> Callable[[DataFrame], DataFrame]:
    """Clinical rows whose own NHS number hash is not an objector's: a record of an
    objector's number linked to someone else, or to a person the objection could not be
    traced to, stays in. A shuffle anti-join on the hash; rows without one pass."""

    def transform(rows: DataFrame) -> DataFrame:
        if objectors is None:
            return rows
        numbers = objectors.filter(F.col("h_nhs").isNotNull()).select("h_nhs")
        return rows.join(numbers, on="h_nhs", how="left_anti")

    return transform


# --- fields ---------------------------------------------------------------------------------


def vault_fields(
    vault_key: KeyFrame, source: str, wanted: Sequence[str], ledger: DataFrame
) -> Callable[[DataFrame], DataFrame]:
    """Vault rows -> (record_key, *wanted) in clear, one row per record key of `source`.

    A key has a vault row per submission that carried it: the identity of the latest
    ingested one (`latest_per_key`: a patient's current postcode, not an old one) is taken
    whole, never mixed across rows. Choosing first means one decryption per key.
    """

    def clear(name: str) -> Column:
        value = F.col("identity")[VAULT_FIELDS[name]]
        if name == "year_of_birth":
            return F.year(F.try_to_date(value, "yyyy-MM-dd"))
        return F.try_to_date(value, "yyyy-MM-dd") if name == "dob" else value

    def transform(vault: DataFrame) -> DataFrame:
        one_row = (
            vault.filter(F.col("source") == source)
            .select("record_key", "submission_id", "enc_identity")
            .transform(latest_per_key(ledger))
        )
        return one_row.transform(with_key_material(vault_key, {"identity": identity_in_clear(vault_key)})).select(
            "record_key", *[clear(f).alias(f) for f in wanted]
        )

    return transform


def minimised(dataset: Dataset, fields: Sequence[str], precision: str) -> Callable[[DataFrame], DataFrame]:
    """The pseudonyms and the agreed fields only, dates at the agreed precision."""

    def column(name: str) -> Column:
        if name in dataset.dates and precision == MONTH:
            return F.date_format(F.col(name), "yyyy-MM").alias(name)
        return F.col(name)

    def transform(df: DataFrame) -> DataFrame:
        return df.select(PERSON, RECORD, *[column(f) for f in fields])

    return transform


@dataclass(frozen=True)
class Sources:
    """What every dataset of one release draws on."""

    links: DataFrame  # the whole link map: (source, record_key, person_id)
    objectors: DataFrame | None  # None when objections are overridden
    vault: DataFrame | None
    ledger: DataFrame  # which run ingested each submission: the vault's latest identity
    pseudonym_key: KeyFrame
    vault_key: KeyFrame | None


def released_rows(
    table: DataFrame, dataset: Dataset, agreement: Agreement, sources: Sources
) -> DataFrame:
    """One dataset's release: clinical rows of eligible records, pseudonymised, minimised;
    no objection code event (see `without_objection_codes`).

    Pseudonyms are computed on the link rows (one HMAC per record key) and carried to the
    rows by the join that finds each record's person: a shuffle of both on the record key.
    """
    fields = agreement.datasets[dataset.name]
    links = (
        sources.links.transform(eligible(dataset.source, sources.objectors))
        .transform(pseudonyms(sources.pseudonym_key))
        .select("record_key", PERSON, RECORD)
    )
    if "SNOMED_CODE" in table.columns:
        table = table.transform(without_objection_codes(load_objection_codes()))
    rows = table.transform(not_of_objecting_numbers(sources.objectors)).join(links, on="record_key", how="inner")
    from_vault = [f for f in fields if f in VAULT_FIELDS]
    if from_vault:
        assert sources.vault is not None and sources.vault_key is not None
        identities = sources.vault.transform(vault_fields(sources.vault_key, dataset.source, from_vault, sources.ledger))
        rows = rows.join(identities, on="record_key", how="left")  # shuffle on the key
    return rows.transform(minimised(dataset, fields, agreement.dates))


# --- delivery -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encrypted_csv(df: DataFrame, staging: Path, name: str, recipient: TransportPublicKey) -> list[dict[str, object]]:
    """Write `df` as CSV parts, encrypt each to the recipient, keep only the envelopes.

    Spark writes the parts in parallel; the driver then streams each through the envelope
    in constant memory and removes its plaintext before the next.
    """
    plain = staging / ".plain" / name
    df.write.option("header", True).csv(str(plain))
    target = staging / name
    target.mkdir()
    files = []
    for part in sorted(plain.glob("part-*.csv")):
        sealed = target / (part.name + ENVELOPE_SUFFIX)
        encrypt_file(part, sealed, recipient)
        part.unlink()
        files.append(
            {"path": f"{name}/{sealed.name}", "bytes": sealed.stat().st_size, "sha256": _sha256(sealed)}
        )
    shutil.rmtree(plain)
    return files


@contextmanager
def staged_delivery(final: Path) -> Iterator[Path]:
    """A private staging folder renamed to `final` only when the block completes."""
    if final.exists():
        raise ReleaseFailed(f"delivery {final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.partial")
    staging.mkdir(mode=PRIVATE_DIR)
    try:
        yield staging
        shutil.rmtree(staging / ".plain", ignore_errors=True)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --- the job --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRequest:
    agreement_id: str
    requester: str
    approvers: tuple[str, ...] = ()
    agreements_dir: str | None = None


@dataclass
class ReleaseResult:
    release_id: str
    delivery: Path
    rows: dict[str, int] = field(default_factory=dict)
    risk: dict[str, RiskReport] = field(default_factory=dict)


def _read(store: DeltaStore, warehouse: str, name: str) -> DataFrame:
    path = table_path(warehouse, name)
    if not store.exists(path):
        raise ReleaseFailed(f"table {name} does not exist in {warehouse}")
    return store.read(path)


def _objectors(store: DeltaStore, warehouse: str, links: DataFrame, as_of: dt.date) -> DataFrame:
    numbers = _read(store, warehouse, PERSONS).select("person_id", "h_nhs")
    objectors = objection_history(store, warehouse).transform(type2_objectors(links, numbers, as_of))
    return objectors.persist(StorageLevel.MEMORY_AND_DISK)


def _manifest(agreement: Agreement, release_id: str, recipient: TransportPublicKey, datasets: dict[str, object]) -> str:
    basis = agreement.legal_basis
    return json.dumps(
        {
            "release_id": release_id,
            "created_at": audit.now().isoformat(timespec="seconds") + "Z",
            "agreement": {
                "id": agreement.id,
                "recipient": agreement.recipient.organisation,
                "purpose": agreement.purpose,
                "flow": agreement.flow,
                "legal_basis": basis.describe() if basis else None,
                "territory": agreement.territory,
                "destroy_by": agreement.destroy_by.isoformat(),
                "date_precision": agreement.dates,
            },
            "encryption": {"envelope": "caredata envelope v1", "recipient_key_id": recipient.key_id.hex()},
            "datasets": datasets,
        },
        indent=2,
    )


def _risk_rows(spark: SparkSession, release_id: str, agreement: Agreement, risk: dict[str, RiskReport]) -> DataFrame:
    at = audit.now()
    rows = [(release_id, agreement.id, name, at, *r.as_dict().values()) for name, r in risk.items()]
    return spark.createDataFrame(
        rows,
        "release_id string, agreement_id string, dataset string, at timestamp, "
        "quasi_identifiers array<string>, k_threshold int, records long, classes long, "
        "smallest_class long, records_at_risk long, highest_risk double, average_risk double",
    )


def run_release(
    spark: SparkSession,
    store: DeltaStore,
    warehouse: str,
    agreement: Agreement,
    keys: tuple[KeyFrame, KeyFrame | None],
    recipient: TransportPublicKey,
    delivery: Path,
    today: dt.date,
    before_delivery: Callable[[ReleaseResult], None],
) -> ReleaseResult:
    """Build, check and deliver every dataset of a permitted release. `before_delivery`
    runs once everything is staged, before the delivery is renamed into place: the audit's
    `done`, so no delivery exists that the trail does not record as done."""
    pseudonym_key, vault_key = keys
    links = _read(store, warehouse, LINK_MAP).select("source", "record_key", "person_id")
    objectors = None if agreement.overrides_objections else _objectors(store, warehouse, links, today)
    sources = Sources(
        links=links,
        objectors=objectors,
        vault=_read(store, warehouse, IDENTITY_VAULT) if vault_key else None,
        ledger=_read(store, warehouse, SUBMISSIONS),
        pseudonym_key=pseudonym_key,
        vault_key=vault_key,
    )
    result = ReleaseResult(release_id=delivery.name, delivery=delivery)
    described: dict[str, object] = {}
    with ExitStack() as cleanup, staged_delivery(delivery) as staging:
        if objectors is not None:
            cleanup.callback(objectors.unpersist)
        for name, fields in agreement.datasets.items():
            dataset = DATASETS[name]
            with stage(LOG, "release.dataset", agreement=agreement.id, dataset=name) as metrics:
                rows = released_rows(_read(store, warehouse, clinical(name)), dataset, agreement, sources)
                rows = rows.persist(StorageLevel.MEMORY_AND_DISK)  # counted, assessed, written
                try:
                    result.rows[name] = rows.count()
                    qis = quasi_identifiers(dataset, fields)
                    result.risk[name] = risk_report(rows, qis, PERSON, agreement.k_threshold)
                    files = encrypted_csv(rows, staging, name, recipient)
                finally:
                    rows.unpersist()
                metrics.update(rows=result.rows[name], files=len(files))
            described[name] = {"fields": fields, "rows": result.rows[name], "files": files,
                               "risk": result.risk[name].as_dict()}
        (staging / MANIFEST).write_text(_manifest(agreement, delivery.name, recipient, described), encoding="utf-8")
        store.write(_risk_rows(spark, delivery.name, agreement, result.risk), table_path(warehouse, RELEASE_RISK))
        before_delivery(result)
    return result


@contextmanager
def release_keys(spark: SparkSession, settings: Settings, agreement: Agreement) -> Iterator[tuple[KeyFrame, KeyFrame | None]]:
    """The agreement's pseudonym key, and the vault key when a field comes from the vault."""
    needs_vault = any(f in VAULT_FIELDS for fields in agreement.datasets.values() for f in fields)
    with ExitStack() as stack:
        master = stack.enter_context(key_file(settings.keys, Role.PSEUDONYM))
        vault = stack.enter_context(key_file(settings.keys, Role.VAULT)) if needs_vault else None
        yield (
            agreement_key(spark, str(master), agreement),
            key_frame(spark, str(vault), Role.VAULT) if vault else None,
        )


def release(
    spark: SparkSession,
    store: DeltaStore,
    settings: Settings,
    warehouse: str,
    request: ReleaseRequest,
    out: str | Path,
    today: dt.date | None = None,
) -> ReleaseResult:
    """Check the request against its agreement, audit it, and deliver the release.

    `today` exists for tests; the command always releases as of the current UTC date, so
    nobody can back-date a release into an agreement's period.
    """
    today = today or audit.now().date()
    entry = audit.AuditEntry(
        at=audit.now(), action=audit.RELEASE, outcome=audit.REFUSED, requester=request.requester,
        agreement_id=request.agreement_id, approvers=list(request.approvers),
    )
    try:
        agreement = load_agreement(request.agreement_id, request.agreements_dir)
        entry = _described(entry, agreement)
        check_request(agreement, today, request.requester, list(request.approvers))
        recipient = load_public_key(agreement.recipient.public_key)
    except (ConfigError, ReleaseRefused, KeyMaterialError) as err:
        audit.record(spark, store, warehouse, audit.stamped(entry, reason=str(err)))
        raise ReleaseRefused(f"release refused: {err}") from None
    release_id = audit.request_id(audit.now())
    delivery = Path(out) / agreement.id / release_id
    entry = audit.stamped(entry, release_id=release_id)
    def done(result: ReleaseResult) -> None:
        audit.record(spark, store, warehouse, audit.stamped(entry, outcome=audit.DONE, rows=sum(result.rows.values())))

    with audit.audited(spark, store, warehouse, entry), release_keys(spark, settings, agreement) as keys:
        return run_release(spark, store, warehouse, agreement, keys, recipient, delivery, today, done)


def _described(entry: audit.AuditEntry, agreement: Agreement) -> audit.AuditEntry:
    basis = agreement.legal_basis
    return audit.stamped(entry, flow=agreement.flow, legal_basis=basis.describe() if basis else None, fields=agreement.fields())


# --- command --------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agreement", required=True, help="agreement id (conf/agreements/<id>.yaml)")
    parser.add_argument("--requester", required=True, help="who asks for this release (audited)")
    parser.add_argument(
        "--approver", action="append", default=[], help="a named approver (red: two, not the requester)"
    )
    parser.add_argument("--out", required=True, help="delivery root; the release goes to OUT/<agreement>/<release>")
    parser.add_argument("--agreements", help="folder of agreement files (default conf/agreements)")


def _run(context: Context, args: argparse.Namespace) -> None:
    request = ReleaseRequest(args.agreement, args.requester, tuple(args.approver), args.agreements)
    result = release(context.spark, context.store, context.settings, context.require("warehouse"), request, args.out)
    print(f"release {result.release_id} delivered to {result.delivery}")
    for name, rows in result.rows.items():
        risk = result.risk[name]
        print(
            f"  {name}: {rows} rows; smallest class {risk.smallest_class} people, "
            f"{risk.records_at_risk} records at risk (k < {risk.k_threshold}), "
            f"highest risk {risk.highest_risk}, average risk {risk.average_risk}"
        )


COMMAND = Command(
    name="release",
    help="deliver an amber or red extract under a data sharing agreement (audited)",
    add_arguments=_add_arguments,
    run=_run,
)
