"""The command line's promise to spark-submit users: every command has a `jobs/` twin."""

from __future__ import annotations

import ast
from pathlib import Path

from caredata_spark.cli import _commands
from caredata_spark.demo import clear_previous

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


def test_a_second_demo_replaces_what_the_first_generated_and_nothing_else(tmp_path: Path) -> None:
    for name in ("landing/gp_events", "warehouse/clinical", "keys", "notes"):
        (tmp_path / name).mkdir(parents=True)
    assert clear_previous(tmp_path) == []  # not a demo folder (no demo.yaml): left alone
    assert (tmp_path / "landing").exists()
    (tmp_path / "demo.yaml").write_text("landing: x\n")
    assert clear_previous(tmp_path) == ["landing", "warehouse"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.yaml", "keys", "notes"]
