"""Faults an unattended pipeline meets: a job killed mid-write, a damaged Delta table, a
warehouse it cannot write, a release that dies during delivery. Real processes where the
fault is a process's (kill -9, exit code, what reaches stderr), real Delta tables always.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from ops_data import Inputs, caredata, local_run, synthetic_inputs, wait_until, write_conf
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from caredata_spark import release as release_module
from caredata_spark.ingest import ingest
from caredata_spark.keys import generate_keys
from caredata_spark.release import ReleaseRequest, release
from caredata_spark.storage import DeltaStore, StorageError, open_store
from caredata_spark.submissions import LEDGER, txn
from caredata_spark.tables import (
    AUDIT,
    DATA_QUALITY,
    DATASETS,
    IDENTITY_VAULT,
    INGEST_RUNS,
    OBJECTIONS,
    QUARANTINE,
    SUBMISSIONS,
    clinical,
    table_path,
)

INGEST_TABLES = (
    INGEST_RUNS, *[clinical(d) for d in DATASETS], IDENTITY_VAULT, QUARANTINE, OBJECTIONS,
    DATA_QUALITY, SUBMISSIONS,
)
AGREEMENT = "OPS-FAULTS-1"
RELEASED = {"gp_events": ["EVENT_DATE", "SNOMED_CODE", "age", "sex"], "hes_apc": ["ADMIDATE", "DIAG_01", "age"]}
TIMEOUT = 900  # seconds a real process may take on a loaded 2-core machine


@pytest.fixture(scope="module")
def inputs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return synthetic_inputs(spark, tmp_path_factory)


@pytest.fixture(scope="module")
def clean(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return local_run(spark, tmp_path_factory)


@pytest.fixture(scope="module")
def store(spark: SparkSession) -> DeltaStore:
    return open_store(spark)


def staged(table: Path) -> bool:
    """Whether a write to `table` is under way (or died): files in its staging folder."""
    staging = table / "_staging"
    return staging.is_dir() and any(staging.iterdir())


def counts(store: DeltaStore, warehouse: Path) -> dict[str, int]:
    return {t: store.read(table_path(str(warehouse), t)).count() for t in INGEST_TABLES}


# --- a damaged table -------------------------------------------------------------------------


def test_corrupted_commit_is_an_error_naming_the_table(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "table")
    for first in (0, 10):
        store.write(spark.range(first, first + 10), path)
    (tmp_path / "table" / "_delta_log" / "00000000000000000001.json").write_text('{"add": {"path": "part-0')
    for operation in (store.read, store.version):
        with pytest.raises(StorageError, match=f"Delta table {re.escape(path)} "):
            operation(path)
    assert store.read(path, version=0).count() == 10  # earlier versions stay readable


def test_ingest_over_a_corrupted_ledger_stops_naming_it(spark, store, inputs, tmp_path) -> None:
    warehouse = tmp_path / "warehouse"
    ledger = table_path(str(warehouse), SUBMISSIONS)
    store.write(spark.createDataFrame([], LEDGER), ledger)
    (Path(ledger) / "_delta_log" / "00000000000000000000.json").write_text("\x00" * 64)
    with pytest.raises(StorageError, match=f"Delta table {re.escape(ledger)} "):
        ingest(spark, store, inputs.settings(warehouse), str(inputs.landing), str(warehouse))
    assert sorted(p.name for p in warehouse.iterdir()) == ["ingest"]  # nothing else written
    assert sorted(p.name for p in (warehouse / "ingest").iterdir()) == ["submissions"]


def test_missing_data_file_is_an_error_naming_the_table(spark: SparkSession, store: DeltaStore, tmp_path: Path) -> None:
    path = str(tmp_path / "table")
    store.write(spark.range(100).withColumn("part", F.col("id") % 2), path, partition_by=["part"])
    next((tmp_path / "table" / "part=1").glob("*.parquet")).unlink()
    with pytest.raises(StorageError, match=f"Delta table {re.escape(path)} is damaged: a data file .* missing"):
        store.read(path)


# --- a warehouse that cannot be written --------------------------------------------------------


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` made read-only; for root (whom modes do not stop) also immutable."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.geteuid() == 0:
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("running as root without chattr: no way to make a folder read-only")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_unwritable_warehouse_is_one_clear_line(inputs: Inputs, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    conf = write_conf(tmp_path / "conf.yaml", inputs, warehouse)
    with read_only(warehouse):
        job = caredata(["--conf", str(conf), "ingest"], tmp_path, "ingest")
        code = job.wait(TIMEOUT)
    stderr = job.err()
    errors = [line for line in stderr.splitlines() if line.startswith("caredata: ")]
    assert code == 1, stderr[-3000:]
    assert len(errors) == 1, errors
    assert re.fullmatch(
        rf"caredata: error: cannot write Delta table {re.escape(str(warehouse))}/ingest/runs: "
        r"(Operation not permitted|Permission denied|Read-only file system)",
        errors[0],
    ), errors[0]
    assert "Traceback" not in stderr and "\tat " not in stderr  # neither Python's nor the JVM's
    assert list(warehouse.iterdir()) == []


# --- a job killed mid-write ---------------------------------------------------------------------


def test_killed_ingest_leaves_no_partial_table_and_resumes_without_duplicates(
    spark: SparkSession, store: DeltaStore, inputs: Inputs, clean: Path, tmp_path: Path
) -> None:
    """kill -9 while the vault is being written: the clinical tables the run had committed
    stay (under the run's transaction id), nothing of the vault is visible, the ledger does
    not show the run; the re-run resumes it, skips what was committed, duplicates nothing."""
    warehouse = tmp_path / "warehouse"
    vault = warehouse / IDENTITY_VAULT
    conf = write_conf(tmp_path / "conf.yaml", inputs, warehouse)
    job = caredata(["--conf", str(conf), "ingest"], tmp_path, "ingest")
    try:
        wait_until(lambda: staged(vault) or job.popen.poll() is not None, TIMEOUT)
    finally:
        job.kill()
    assert job.popen.returncode == -9, f"ingest ended before writing the vault:\n{job.err()[-3000:]}"
    assert staged(vault)  # the kill interrupted the vault's write, whose files are still staged

    versions = {t: store.version(table_path(str(warehouse), t)) for t in INGEST_TABLES}
    assert versions[IDENTITY_VAULT] is None and versions[SUBMISSIONS] is None
    committed = [t for t, v in versions.items() if v is not None]
    assert set(committed) >= {INGEST_RUNS, *[clinical(d) for d in DATASETS]}
    for table in committed:  # one commit each, under this run's transaction id
        path = table_path(str(warehouse), table)
        assert (versions[table], store.txn_version(path, txn(table, 1).app_id)) == (0, 1), table

    result = ingest(spark, store, inputs.settings(warehouse), str(inputs.landing), str(warehouse))

    assert (result.run_id, result.resumed) == (1, True)
    assert {t: store.version(table_path(str(warehouse), t)) for t in INGEST_TABLES} == dict.fromkeys(INGEST_TABLES, 0)
    assert counts(store, warehouse) == counts(store, clean)
    assert staged(vault)  # the killed write's files: no log names them, no job removes them
    assert store.remove_abandoned_writes(str(vault), older_than_hours=0) == 1 and not staged(vault)
    assert counts(store, warehouse) == counts(store, clean)


# --- a release that dies during delivery ----------------------------------------------------------


@pytest.fixture
def release_env(clean: Path, tmp_path: Path) -> dict[str, Path]:
    """A copy of the clean warehouse (releases audit into it) and an amber agreement."""
    warehouse = tmp_path / "warehouse"
    shutil.copytree(clean, warehouse)
    generate_keys(tmp_path / "recipient")
    today = dt.date.today()
    agreement = {
        "id": AGREEMENT, "purpose": "Operations test", "flow": "amber", "datasets": RELEASED,
        "recipient": {"organisation": "Test recipient", "public_key": str(tmp_path / "recipient" / "transport.pub")},
        "start": today - dt.timedelta(days=365), "end": today + dt.timedelta(days=365),
        "destroy_by": today + dt.timedelta(days=730), "territory": "England", "dates": "month",
    }
    (tmp_path / "agreements").mkdir()
    (tmp_path / "agreements" / f"{AGREEMENT}.yaml").write_text(yaml.safe_dump(agreement), encoding="utf-8")
    return {"warehouse": warehouse, "agreements": tmp_path / "agreements", "out": tmp_path / "out"}


def outcomes(store: DeltaStore, warehouse: Path) -> list[str]:
    """The audited outcomes of this test's agreement, in order."""
    audit = store.read(table_path(str(warehouse), AUDIT)).filter(F.col("agreement_id") == AGREEMENT)
    return [r.outcome for r in audit.orderBy("at").collect()]


def delivered_entries(out: Path) -> list[str]:
    folder = out / AGREEMENT
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_release_failing_mid_delivery_leaves_nothing_that_looks_delivered(
    spark: SparkSession, store: DeltaStore, inputs: Inputs, release_env: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first dataset is sealed, the second fails: no delivery folder, no staging left."""
    sealed: list[Path] = []
    real_encrypt = release_module.encrypt_file

    def encrypt_then_fail(source: Path, target: Path, recipient: object) -> None:
        if sealed and target.parent.name != sealed[0].parent.name:
            raise OSError(28, "No space left on device")
        real_encrypt(source, target, recipient)
        sealed.append(target)

    monkeypatch.setattr(release_module, "encrypt_file", encrypt_then_fail)
    request = ReleaseRequest(AGREEMENT, "Ops Tester", (), str(release_env["agreements"]))
    with pytest.raises(OSError, match="No space left"):
        release(spark, store, inputs.settings(release_env["warehouse"]), str(release_env["warehouse"]),
                request, release_env["out"])
    assert sealed and sealed[0].parent.parent.name.endswith(".partial")  # it did get half-way
    assert delivered_entries(release_env["out"]) == []
    assert outcomes(store, release_env["warehouse"]) == ["started", "failed"]


def test_killed_release_leaves_only_a_hidden_partial_folder(
    store: DeltaStore, inputs: Inputs, release_env: dict[str, Path], tmp_path: Path
) -> None:
    conf = write_conf(tmp_path / "conf.yaml", inputs, release_env["warehouse"])
    args = ["--conf", str(conf), "release", "--agreement", AGREEMENT, "--requester", "Ops Tester",
            "--agreements", str(release_env["agreements"]), "--out", str(release_env["out"])]
    job = caredata(args, tmp_path, "release")

    def sealing() -> bool:
        return any((release_env["out"] / AGREEMENT).glob(".*.partial/*/*.enc"))

    try:
        wait_until(lambda: sealing() or job.popen.poll() is not None, TIMEOUT)
    finally:
        job.kill()
    assert job.popen.returncode == -9, f"release ended before delivering:\n{job.err()[-3000:]}"
    (left,) = delivered_entries(release_env["out"])
    assert left.startswith(".") and left.endswith(".partial")  # never a complete-looking folder
    assert not (release_env["out"] / AGREEMENT / left / release_module.MANIFEST).exists()
    assert outcomes(store, release_env["warehouse"]) == ["started"]  # the audit shows it unfinished
