"""The quarantine table (CONTRACT section 3): every rejected record, nothing lost.

Raw content is kept byte for byte but encrypted under the vault key (AES-256-GCM), because
a rejected line can still carry an NHS number; `caredata quarantine` lets an authorised
operator (holding the vault key) read it back.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from caredata_spark import audit
from caredata_spark.cli import Command, Context
from caredata_spark.errors import UsageError
from caredata_spark.keyed_hash import KeyFrame, key_frame, with_key_material
from caredata_spark.keys import Role, key_file
from caredata_spark.tables import QUARANTINE, table_path

COLUMNS = (
    "dataset", "submitter", "submission_id", "file", "line_number", "record_key", "reason",
    "reasons", "raw_content", "run_id", "quarantined_at",
)


def quarantine_rows(vault_key: KeyFrame, run_id: int) -> Callable[[DataFrame], DataFrame]:
    """Rejected rows (with dataset, submitter, file, line, record key, line bytes, reasons)
    -> table rows. The record key (null when the line did not parse) lets a later type 1
    objection erase the patient's rejected lines too."""

    def transform(rejected: DataFrame) -> DataFrame:
        encrypted = {"raw_content": F.aes_encrypt(F.col("line"), vault_key.key, F.lit("GCM"))}
        return (
            rejected.select(
                "dataset", "submitter", "submission_id", F.col("path").alias("file"),
                "line_number", "record_key", F.col("reasons")[0].alias("reason"), "reasons", "line",
            )
            .transform(with_key_material(vault_key, encrypted))
            .withColumn("run_id", F.lit(run_id).cast("long"))
            .withColumn("quarantined_at", F.current_timestamp())
            .select(*COLUMNS)
        )

    return transform


def _raw_in_clear(vault_key: KeyFrame) -> dict[str, Column]:
    raw = F.aes_decrypt(F.col("raw_content"), vault_key.key, F.lit("GCM"))
    return {"raw_content": raw.cast("string")}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--submission", help="only rows of this submission id (content hash)")
    parser.add_argument("--reason", help="only rows with this reason code")
    parser.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    parser.add_argument(
        "--decrypt", action="store_true", help="show raw content in clear (needs the vault key; audited)"
    )
    parser.add_argument("--requester", help="who reads the raw content (required with --decrypt; audited)")


def _run(context: Context, args: argparse.Namespace) -> None:
    warehouse = context.require("warehouse")
    if args.decrypt and not args.requester:
        raise UsageError("--decrypt shows identifiable lines: name yourself with --requester (it is audited)")
    rows = context.store.read(table_path(warehouse, QUARANTINE))
    if args.submission:
        rows = rows.filter(F.col("submission_id") == args.submission)
    if args.reason:
        rows = rows.filter(F.array_contains("reasons", args.reason))
    rows = rows.orderBy("file", "line_number").limit(args.limit)
    if not args.decrypt:
        rows.drop("raw_content").show(args.limit, truncate=False)
        return
    selection = [f"{k}={v}" for k, v in (("submission", args.submission), ("reason", args.reason)) if v]
    entry = audit.AuditEntry(
        at=audit.now(), action=audit.QUARANTINE_DECRYPT, outcome=audit.STARTED, requester=args.requester,
        fields=[*selection, f"limit={args.limit}"],
    )
    with audit.audited(context.spark, context.store, warehouse, entry):
        with key_file(context.settings.keys, Role.VAULT) as path:
            vault_key = key_frame(context.spark, str(path), Role.VAULT)
            rows.transform(with_key_material(vault_key, _raw_in_clear(vault_key))).show(args.limit, truncate=False)
    done = audit.stamped(entry, outcome=audit.DONE, rows=rows.count())  # counted encrypted
    audit.record(context.spark, context.store, warehouse, done)


COMMAND = Command(
    name="quarantine",
    help="list quarantined rows with their reasons; --decrypt shows raw content to key holders (audited)",
    add_arguments=_add_arguments,
    run=_run,
)
