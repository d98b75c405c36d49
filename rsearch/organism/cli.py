"""`rsearch organism build [--size tiny|demo] [--seed N] [--out DIR] [--force]`."""
from __future__ import annotations

import argparse

from rsearch.organism.config import SIZES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="organism_command", metavar="ACTION", parser_class=type(parser))
    b = sub.add_parser("build", help="build (or find cached) the model organism and print its card",
                       description="Trains the SFT model, samples and rates feedback data, trains the DPO model "
                                   "and writes a card of checks. Cached: a second build returns at once.")
    b.add_argument("--size", choices=SIZES, default="demo", help="tiny (tests, ≤ 45 s) or demo (≤ 5 min); default demo")
    b.add_argument("--seed", type=int, default=0, help="random seed; same seed → same artifacts (default 0)")
    b.add_argument("--out", default=None, help="directory to build into (default $RSEARCH_HOME/organism/SIZE-seedSEED)")
    b.add_argument("--force", action="store_true", help="rebuild even if a matching organism exists")
    b.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> int:
    from rsearch.organism import ensure
    from rsearch.errors import RsearchError

    if getattr(args, "organism_command", None) != "build":
        raise RsearchError("organism: expected an action: build (see `rsearch organism build --help`)")
    if args.seed < 0:
        raise RsearchError(f"--seed: expected a non-negative integer, got {args.seed}")
    org = ensure(args.size, seed=args.seed, out=args.out, progress=not args.quiet, force=args.force)
    c = org.card["checks"]
    lo, hi = c["reward_gain_ci95"]
    print(f"organism: {org.root}")
    print(f"card:     {org.root / 'card.md'}")
    print(f"built in {org.card['build_seconds']:.0f} s; true reward pre {c['reward_pre']:.2f} → post "
          f"{c['reward_post']:.2f} ({c['reward_gain']:+.2f} [{lo:+.2f}, {hi:+.2f}]); "
          f"DPO implicit accuracy {c['dpo_implicit_accuracy']:.3f}; noise ceiling {c['noise_ceiling']:.3f}; "
          f"task spread {c['task_spread']:.2f}; well-formed {c['well_formed_pre']:.3f}")
    missed = [k for k, t in org.card["targets"].items() if not t["met"]]
    if missed:
        print(f"targets not met at this size: {', '.join(missed)}")
    return 0
