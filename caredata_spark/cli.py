"""`caredata` command line: global options, configuration, one-line errors, exit codes.

Each command lives beside the concept it runs (e.g. `caredata_spark.synthetic.command`)
and exposes `COMMAND`; `jobs/<name>.py` calls `main([name, ...])` for spark-submit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from pyspark.sql import SparkSession

from caredata_spark.config import Settings, load_settings
from caredata_spark.errors import CaredataError, UsageError
from caredata_spark.observability import configure_logging, get_logger, log_event
from caredata_spark.storage import DeltaStore, open_store

COMMAND_MODULES = [
    "caredata_spark.info",
    "caredata_spark.synthetic.command",
    "caredata_spark.crypto_commands",
    "caredata_spark.encrypt_command",
    "caredata_spark.ingest",
    "caredata_spark.linkage.command",
    "caredata_spark.quarantine",
    "caredata_spark.purge",
    "caredata_spark.maintenance",
    "caredata_spark.pipeline",
    "caredata_spark.release",
    "caredata_spark.subject_access",
    "caredata_spark.publish",
]


class Context:
    """What a command needs: settings, and a Spark session and store built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def spark(self) -> SparkSession:
        from caredata_spark.session import build_session

        return build_session(self.settings.spark)

    @cached_property
    def store(self) -> DeltaStore:
        return open_store(self.spark, self.settings.storage)

    def require(self, option: str) -> str:
        value = getattr(self.settings, option)
        if not value:
            raise UsageError(f"--{option} is required (or set '{option}' in the --conf file)")
        return str(value)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context, argparse.Namespace], None]


def _commands() -> list[Command]:
    return [importlib.import_module(m).COMMAND for m in COMMAND_MODULES]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("caredata").strip()
        raise UsageError(f"{where}: {message}" if where else message)


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="caredata",
        description="caredata-spark: ingest, link and release health data in a safe haven.",
    )
    parser.add_argument("--conf", help="YAML configuration file (default conf/local.yaml)")
    parser.add_argument("--warehouse", help="warehouse root holding the Delta tables")
    parser.add_argument("--landing", help="landing zone of inbound submissions")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in commands:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        for option in ("--conf", "--warehouse", "--landing"):
            command_parser.add_argument(option, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.add_arguments(command_parser)
        command_parser.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logger = get_logger("cli")
    args = None
    try:
        parser = build_parser(_commands())
        args = parser.parse_args(argv)
        configure_logging(args.log_level)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        settings = load_settings(args.conf, warehouse=args.warehouse, landing=args.landing)
        args.handler(Context(settings), args)
        return 0
    except CaredataError as err:
        print(f"caredata: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("caredata: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args is not None and args.debug:
            raise
        # Unexpected errors may quote data (a Spark cast error quotes the value): say only
        # what kind of error it was; --debug shows the traceback to an authorised operator.
        log_event(logger, "unexpected_error", error=type(err).__name__)
        print(
            f"caredata: unexpected {type(err).__name__}; re-run with --debug for details",
            file=sys.stderr,
        )
        return 1


def job(name: str) -> None:
    """Entry point of `jobs/<name>.py` under spark-submit."""
    sys.exit(main([name, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
