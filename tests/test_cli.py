"""The command line's promise to spark-submit users: every command has a `jobs/` twin."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from caredata_spark.cli import _commands
from caredata_spark.config import CONF_DIR, CONF_DIR_ENV, load_settings
from caredata_spark.demo import clear_previous
from caredata_spark.linkage.settings import linkage_settings

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_every_command_has_a_job_twin_that_runs_it() -> None:
    for command in _commands():
        twin = JOBS / f"{command.name.replace('-', '_')}.py"
        assert twin.is_file(), f"no {twin.name} for `caredata {command.name}`"
        calls = [
            node.args[0].value
            for node in ast.walk(ast.parse(twin.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "job"
        ]
        assert calls == [command.name], twin.name


def test_the_shipped_configurations_load_with_valid_linkage_sections() -> None:
    """The link job validates `linkage:` only when it starts: a typo in the cluster example
    would otherwise first show on a cluster, one step into a scheduled run."""
    for name in ("local.yaml", "cluster.yaml"):
        settings = load_settings(CONF_DIR / name)
        assert linkage_settings(settings.linkage).min_probability == 0.999, name


def test_a_second_demo_replaces_what_the_first_generated_and_nothing_else(tmp_path: Path) -> None:
    for name in ("landing/gp_events", "warehouse/clinical", "keys", "notes"):
        (tmp_path / name).mkdir(parents=True)
    assert clear_previous(tmp_path) == []  # not a demo folder (no demo.yaml): left alone
    assert (tmp_path / "landing").exists()
    (tmp_path / "demo.yaml").write_text("landing: x\n")
    assert clear_previous(tmp_path) == ["landing", "warehouse"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.yaml", "keys", "notes"]


def test_a_driver_importing_the_spark_submit_zip_finds_conf_through_the_environment(tmp_path: Path) -> None:
    """spark-submit --py-files puts the zip first on the driver's path: the package then
    sits inside the zip, with no conf/ beside it, so the reference data is found through
    CAREDATA_CONF_DIR (deploy/submit.sh sets it)."""
    repo = Path(__file__).resolve().parents[1]
    archive = shutil.make_archive(str(tmp_path / "caredata_spark"), "zip", repo, "caredata_spark")  # as `make package`
    probe = "from caredata_spark.objections import load_objection_codes; print(len(load_objection_codes().type1.dissent))"
    env = {**os.environ, "PYTHONPATH": archive}
    env.pop(CONF_DIR_ENV, None)
    without = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert without.returncode != 0 and "objections.yaml: cannot read" in without.stderr
    env[CONF_DIR_ENV] = str(repo / "conf")
    named = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert named.returncode == 0, named.stderr
    assert int(named.stdout) > 0
