"""The command line's promise to spark-submit users: every command has a `jobs/` twin."""

from __future__ import annotations

import ast
from pathlib import Path

from caredata_spark.cli import _commands

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
