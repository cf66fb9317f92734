"""Shared inputs of the operations tests (cluster, faults): one synthetic landing zone and
one clean local-mode pipeline run per test run, and real `caredata` processes.

Generating the landing zone and running the pipeline are the slow parts, so both are
cached in the test run's temp folder and shared by every module that needs them; under
`make test`'s xdist workers, the first to need one builds it while the other waits.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from caredata_spark.cli import Context
from caredata_spark.config import KeySettings, Settings
from caredata_spark.keys import generate_keys
from caredata_spark.pipeline import run_pipeline
from caredata_spark.storage import open_store
from caredata_spark.synthetic.generate import generate
from caredata_spark.synthetic.settings import load_synth_settings

PEOPLE = 300
SEED = 8
RUN_DATE = dt.date(2025, 4, 1)  # the day after the synthetic data period ends
NO_ENV = KeySettings(linkage_env="-", vault_env="-", pseudonym_env="-", transport_env="-")
COMPLETE = ".complete"


@dataclass(frozen=True)
class Inputs:
    landing: Path
    keys: KeySettings

    def settings(self, warehouse: Path) -> Settings:
        return Settings(landing=str(self.landing), warehouse=str(warehouse), keys=self.keys)


def shared_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test run's temp folder: under xdist, the one every worker's own folder is in."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def built_once(folder: Path, build: Callable[[], None]) -> None:
    """`build()` into `folder` unless an earlier call completed it; workers take turns."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / COMPLETE).exists():
            build()
            (folder / COMPLETE).touch()


def synthetic_inputs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """Keys and a landing zone of PEOPLE synthetic people, made once per test run."""
    root = shared_temp(tmp_path_factory) / "ops-inputs"
    inputs = Inputs(root / "landing", replace(NO_ENV, directory=str(root / "keys")))

    def build() -> None:
        generate_keys(root / "keys")
        synth = load_synth_settings({}, people=PEOPLE, seed=SEED)
        generate(spark, open_store(spark), synth, str(inputs.landing), str(root / "truth"))

    built_once(root, build)
    return inputs


def context(spark: SparkSession, settings: Settings) -> Context:
    """A command context on the shared test session (never a second session)."""
    ctx = Context(settings)
    ctx.__dict__["spark"] = spark
    return ctx


def local_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Warehouse of one clean local-mode `caredata run` over the synthetic inputs."""
    inputs = synthetic_inputs(spark, tmp_path_factory)
    warehouse = shared_temp(tmp_path_factory) / "ops-local-run" / "warehouse"
    built_once(warehouse.parent, lambda: run_pipeline(context(spark, inputs.settings(warehouse)), RUN_DATE))
    return warehouse


def write_conf(path: Path, inputs: Inputs, warehouse: Path) -> Path:
    """A --conf file for a separate process: the session sized as the test session."""
    conf = {
        "landing": str(inputs.landing),
        "warehouse": str(warehouse),
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        "keys": asdict(inputs.keys),
    }
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    return path


def process_env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}


@dataclass
class Process:
    """A process started in its own process group, its output in files."""

    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def kill(self) -> None:
        """SIGKILL to the whole group: the driver and the JVM it started, like a lost node."""
        self._signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left of it after `grace` seconds."""
        self._signal(signal.SIGTERM)
        if not wait_until(self.ended, grace, every=0.2):
            self._signal(signal.SIGKILL)
            wait_until(self.ended, grace, every=0.2)

    def ended(self) -> bool:
        """Whether no process of the group is left (the leader reaped first)."""
        self.popen.poll()
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def _signal(self, number: int) -> None:
        try:
            os.killpg(self.popen.pid, number)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def err(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def start(command: Sequence[str], logs: Path, name: str, env: dict[str, str] | None = None) -> Process:
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        popen = subprocess.Popen(
            list(command), stdout=out, stderr=err, env=env or process_env(),
            start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
        )
    return Process(popen, stdout, stderr)


def caredata(args: Sequence[str], logs: Path, name: str) -> Process:
    """`caredata ARGS` as its own process (the installed console script), own local Spark."""
    return start([str(Path(sys.executable).parent / "caredata"), *args], logs, name)


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False
