"""`caredata encrypt`: how a provider turns `<file>.csv` into `<file>.csv.enc`."""

from __future__ import annotations

import argparse
from pathlib import Path

from caredata_spark.cli import Command, Context
from caredata_spark.envelope import (
    DEFAULT_CHUNK_SIZE,
    ENVELOPE_SUFFIX,
    MAX_CHUNK_SIZE,
    SUITE_NAMES,
    encrypt_file,
)
from caredata_spark.errors import UsageError
from caredata_spark.keys import load_public_key


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="source", required=True, help="plaintext file")
    parser.add_argument("--out", help=f"envelope to write (default: --in + {ENVELOPE_SUFFIX})")
    parser.add_argument(
        "--public-key", required=True, help="the safe haven's transport.pub"
    )
    parser.add_argument(
        "--suite",
        choices=sorted(SUITE_NAMES),
        default="mlkem768-x25519",
        help="key encapsulation: post-quantum hybrid (default) or classical X25519",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="plaintext bytes per chunk"
    )


def run(context: Context, args: argparse.Namespace) -> None:
    if not Path(args.source).is_file():
        raise UsageError(f"--in {args.source}: no such file")
    if not 1 <= args.chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(f"--chunk-size must be between 1 and {MAX_CHUNK_SIZE} bytes")
    out = args.out or args.source + ENVELOPE_SUFFIX
    recipient = load_public_key(args.public_key)
    encrypt_file(args.source, out, recipient, SUITE_NAMES[args.suite], args.chunk_size)
    print(out)


COMMAND = Command(
    name="encrypt",
    help="encrypt a submission to the safe haven's transport public key (providers)",
    add_arguments=_add_arguments,
    run=run,
)
