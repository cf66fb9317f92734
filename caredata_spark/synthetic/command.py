"""`caredata synth`: a synthetic landing zone and its ground truth (CONTRACT.md section 4)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from caredata_spark.cli import Command, Context
from caredata_spark.errors import UsageError
from caredata_spark.keys import load_public_key
from caredata_spark.synthetic.generate import default_truth, generate
from caredata_spark.synthetic.settings import FORMATS, load_synth_settings


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--people", type=int, help="number of people (default: conf/synth.yaml)")
    parser.add_argument("--seed", type=int, help="seed: the same seed and options give the same files")
    parser.add_argument("--truth", help="ground-truth folder, outside the landing zone (default: `truth` beside it)")
    parser.add_argument("--format", choices=FORMATS, help="submission file format (default csv)")
    parser.add_argument("--years", type=int, help="length of the data period in years (default 2)")
    parser.add_argument("--end-date", help="last day of the data period, YYYY-MM-DD")
    parser.add_argument("--encrypt", action="store_true", help="encrypt every file to --public-key (.csv.enc)")
    parser.add_argument("--public-key", help="the safe haven's transport public key (with --encrypt)")


def run(context: Context, args: argparse.Namespace) -> None:
    landing = context.require("landing")
    if args.encrypt != bool(args.public_key):
        raise UsageError("--encrypt needs --public-key" if args.encrypt else "--public-key needs --encrypt")
    settings = load_synth_settings(
        context.settings.synth,
        people=args.people,
        seed=args.seed,
        truth=args.truth,
        format=args.format,
        years=args.years,
        end_date=args.end_date,
    )
    public_key = load_public_key(args.public_key).to_text() if args.encrypt else None
    result = generate(
        context.spark,
        context.store,
        settings,
        landing,
        settings.truth or default_truth(landing),
        public_key=public_key,
    )
    print(json.dumps(asdict(result), indent=2))


COMMAND = Command(
    name="synth",
    help="generate synthetic GP and hospital submissions with ground truth",
    add_arguments=_add_arguments,
    run=run,
)
