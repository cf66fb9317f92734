"""The pipeline on a real Spark standalone cluster (a master and two workers on 127.0.0.1,
started from the pyspark installation) gives the same tables as a local-mode run.

The cluster run is `spark-submit jobs/run.py`, exactly as a scheduler runs it; the local run
goes on in this process meanwhile. Executors are separate JVMs with their own Python
workers, so this catches what only works when driver and executors share a process:
driver-side Python state or environment, a Python data source only the driver registered,
closures that do not serialise, a package the executors' Python cannot import. Driver and
workers share this machine's file system, so shared storage is not what it tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
from chispa import assert_df_equality
from ops_data import RUN_DATE, Process, local_run, process_env, start, synthetic_inputs, wait_until, write_conf
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from caredata_spark.pipeline import STEPS
from caredata_spark.session import JIT_HUGE_METHODS
from caredata_spark.storage import DeltaStore, open_store
from caredata_spark.tables import DATASETS, IDENTITY_VAULT, LINK_MAP, PIPELINE_RUNS, QUARANTINE, clinical, table_path

SPARK_HOME = Path(pyspark.__file__).resolve().parent
REPO = Path(__file__).resolve().parent.parent
WORKERS = 2
TIMEOUT = 1200  # seconds for the submitted run on a loaded 2-core machine
SUBMITTED_OPTION = "-Dcaredata.test.submitted=yes"  # an executor Java option of the submitter's own

pytestmark = pytest.mark.skipif(
    not (SPARK_HOME / "bin" / "spark-class").exists() or shutil.which("java") is None,
    reason="needs Java and the pyspark installation's bin/spark-class",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alive_workers(webui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=2) as answer:
            return int(json.load(answer).get("aliveworkers", 0))
    except OSError:
        return 0


@dataclass(frozen=True)
class Cluster:
    url: str
    root: Path  # daemon logs, and each worker's work dir (work-<n>/<app>/<executor>/)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A standalone master and two one-core workers on loopback.

    Every daemon runs in its own process group, so stopping the group also stops the
    executors it launched; the finaliser runs whatever happens to the tests, and fails if
    any process of the cluster survived it.
    """
    root = tmp_path_factory.mktemp("cluster")
    port, webui = free_port(), free_port()
    env = {
        **process_env(),
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_DAEMON_MEMORY": "256m",
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    daemons: list[Process] = []
    try:
        daemons.append(start(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(webui)],
            root, "master", env,
        ))
        url = f"spark://127.0.0.1:{port}"
        for n in range(WORKERS):
            work = root / f"work-{n}"
            work.mkdir()
            daemons.append(start(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                 "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(work)],
                root, f"worker-{n}", env,
            ))
        if not wait_until(lambda: alive_workers(webui) == WORKERS, timeout=180, every=1):
            pytest.fail(f"cluster did not come up:\n{daemons[0].err()[-2000:]}")
        yield Cluster(url, root)
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
    assert all(d.ended() for d in daemons), "a cluster process outlived the test"


def submit(master: str, conf: Path, logs: Path) -> Process:
    """`spark-submit jobs/run.py` as a scheduler would, with the driver on loopback."""
    return start(
        [
            str(SPARK_HOME / "bin" / "spark-submit"), "--master", master,
            "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
            "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.ui.enabled=false",
            "--conf", "spark.executor.memory=768m", "--driver-memory", "1g",
            "--conf", f"spark.executor.extraJavaOptions={SUBMITTED_OPTION}",
            str(REPO / "jobs" / "run.py"), "--conf", str(conf), "--date", RUN_DATE.isoformat(),
        ],
        logs, "spark-submit", {**process_env(), "SPARK_HOME": str(SPARK_HOME)},
    )


@pytest.fixture(scope="module")
def warehouses(spark: SparkSession, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cluster warehouse, local warehouse) of the same run over the same landing zone."""
    inputs = synthetic_inputs(spark, tmp_path_factory)
    root = tmp_path_factory.mktemp("cluster-run")
    warehouse = root / "warehouse"
    job = submit(cluster.url, write_conf(root / "cluster.yaml", inputs, warehouse), root)
    try:
        local = local_run(spark, tmp_path_factory)  # meanwhile, in this process
        code = job.wait(TIMEOUT)
    finally:
        job.stop()
    assert code == 0, job.err()[-5000:]
    return warehouse, local


@pytest.fixture(scope="module")
def store(spark: SparkSession) -> DeltaStore:
    return open_store(spark)


def both(store: DeltaStore, warehouses: tuple[Path, Path], table: str, *columns: str) -> tuple[DataFrame, DataFrame]:
    return tuple(store.read(table_path(str(w), table)).select(*columns) for w in warehouses)  # type: ignore[return-value]


def test_the_job_ran_on_both_workers(cluster: Cluster, warehouses: tuple[Path, Path]) -> None:
    executors = list(cluster.root.glob("work-*/app-*/*/stderr"))
    assert len({e.parent.parent.parent for e in executors}) == WORKERS


def test_executors_keep_the_submitted_java_options_and_get_the_jit_flag(cluster: Cluster, warehouses: tuple[Path, Path]) -> None:
    """The session adds its flag to the options spark-submit gave, before executors start."""
    launches = [log.read_text(errors="replace").splitlines()[0] for log in cluster.root.glob("work-*/app-*/*/stderr")]
    assert launches
    for command in launches:
        options = [word.strip('"') for word in command.split()]
        assert SUBMITTED_OPTION in options and JIT_HUGE_METHODS in options, command[:200]


def test_every_step_finished_on_the_cluster(store: DeltaStore, warehouses: tuple[Path, Path]) -> None:
    cluster_run, local = both(store, warehouses, PIPELINE_RUNS, "run_date", "step", "status")
    finished = cluster_run.filter(F.col("status") == "finished")
    assert_df_equality(finished, local.filter(F.col("status") == "finished"), ignore_row_order=True)
    assert sorted(r.step for r in finished.collect()) == sorted(step.name for step in STEPS)


def test_link_map_is_the_same(store: DeltaStore, warehouses: tuple[Path, Path]) -> None:
    weight = F.round("match_weight", 6).alias("match_weight")  # EM sums in another order
    cluster_run, local = (
        frame.select("source", "record_key", "person_id", "match_step", weight, "run")
        for frame in both(store, warehouses, LINK_MAP, "*")
    )
    assert local.count() > 1000
    assert_df_equality(cluster_run, local, ignore_row_order=True)


@pytest.mark.parametrize("dataset", DATASETS)
def test_clinical_keys_are_the_same(store: DeltaStore, warehouses: tuple[Path, Path], dataset: str) -> None:
    cluster_run, local = both(store, warehouses, clinical(dataset), "record_key", "submission_id", "line_number", "h_nhs")
    assert local.count() > 0
    assert_df_equality(cluster_run, local, ignore_row_order=True)


def test_quarantine_keys_are_the_same(store: DeltaStore, warehouses: tuple[Path, Path]) -> None:
    cluster_run, local = both(store, warehouses, QUARANTINE, "dataset", "submission_id", "line_number", "reason")
    assert local.count() > 0
    assert_df_equality(cluster_run, local, ignore_row_order=True)


def test_vault_holds_the_same_records(store: DeltaStore, warehouses: tuple[Path, Path]) -> None:
    """Ciphertexts differ by design (a fresh nonce each); who is in the vault must not."""
    cluster_run, local = both(store, warehouses, IDENTITY_VAULT, "source", "record_key", "submission_id", "h_nhs")
    assert cluster_run.count() == local.count() > 0
    assert_df_equality(cluster_run, local, ignore_row_order=True)
