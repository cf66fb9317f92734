"""Names of the warehouse's Delta tables (paths relative to the warehouse root).

`linkage/link_map` and `quarantine` are fixed by the data contract (shared/CONTRACT.md);
the rest are the platform's own layout, documented in the README.
"""

from __future__ import annotations

from caredata_spark.contract import DATASETS as CONTRACT_DATASETS

DATASETS = tuple(CONTRACT_DATASETS)
HES_DATASETS = tuple(name for name in DATASETS if name.startswith("hes_"))

SUBMISSIONS = "ingest/submissions"  # ledger: one row per inbound file
INGEST_RUNS = "ingest/runs"  # the files each ingest run planned (resume after a failure)
DATA_QUALITY = "ingest/data_quality"  # counts per run, reason and submitter
QUARANTINE = "quarantine"  # contract: every rejected record, encrypted raw content
OBJECTIONS = "ingest/objections"  # type 2 (and type 1 counts) state history per patient key
IDENTITY_VAULT = "identity/vault"  # identifiers, encrypted at rest (AES-GCM, vault key)
PIPELINE_RUNS = "ops/pipeline_runs"  # run ledger: each step's start, finish or failure
METRICS = "ops/metrics"  # per-step figures of every pipeline run
LINK_MAP = "linkage/link_map"  # contract
PERSONS = "linkage/persons"
LINKAGE_REPORT = "linkage/report"
LINKAGE_RUNS = "linkage/runs"  # ledger: the submissions each linkage run consumed
LINKAGE_INPUTS = "linkage/inputs"  # each linkage run's plan: its submissions, the versions read
AUDIT = "release/audit"  # append-only: every release, refusal and subject access
RELEASE_RISK = "release/risk"  # re-identification risk report of each release
PUBLICATIONS = "publish/publications"  # ledger: the green table versions each publication made


def clinical(dataset: str) -> str:
    """Clinical table of a dataset: record keys, linkage hashes and clinical fields only."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    return f"clinical/{dataset}"


def green(table: str) -> str:
    """A published (green) table: anonymous aggregates, overwritten by each publication."""
    return f"green/{table}"


def publication_cells(table: str) -> str:
    """Internal: every published version of a period table's cells, true counts included
    (the disclosure engine protects a new version against them); never published."""
    return f"publish/cells/{table}"


def table_path(warehouse: str, name: str) -> str:
    return f"{warehouse.rstrip('/')}/{name}"
