"""`caredata keys`: make a key set, and print the public key providers encrypt to.

Only file names, key ids and public keys are printed; secret key bytes never are.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from caredata_spark.cli import Command, Context
from caredata_spark.keys import generate_keys, load_transport_key


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = actions.add_parser(
        "generate", help="write a new key for every role (0600) and transport.pub"
    )
    generate.add_argument("--dir", help="key directory (default: keys.directory in --conf)")
    generate.add_argument(
        "--force", action="store_true", help="replace existing keys (old hashes stop linking)"
    )
    public = actions.add_parser(
        "public", help="print the transport public key providers encrypt submissions to"
    )
    public.add_argument("--dir", help="key directory (default: keys.directory in --conf)")
    public.add_argument("--out", help="write the public key to this file instead of stdout")


def run(context: Context, args: argparse.Namespace) -> None:
    settings = context.settings.keys
    if args.dir:
        settings = dataclasses.replace(settings, directory=args.dir)
    if args.action == "generate":
        for path in generate_keys(settings.directory, force=args.force):
            print(path)
        return
    text = load_transport_key(settings).public_key().to_text()
    if args.out:
        Path(args.out).write_text(text, encoding="ascii")
    else:
        sys.stdout.write(text)


COMMAND = Command(
    name="keys",
    help="generate the safe haven's keys, or print its transport public key",
    add_arguments=_add_arguments,
    run=run,
)
