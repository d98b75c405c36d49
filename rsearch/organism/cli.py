"""`rsearch organism build [--size tiny|demo] [--seed N] [--out DIR] [--force]`."""
from __future__ import annotations

import argparse
import logging

from rsearch.config import add_config_arguments, config_from_args
from rsearch.log import add_verbosity, show_progress
from rsearch.organism.config import OrganismBuildConfig
from rsearch.errors import RsearchError
from rsearch.organism import ensure

log = logging.getLogger("rsearch.organism")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="organism_command", metavar="ACTION", parser_class=type(parser))
    b = sub.add_parser("build", help="build (or find cached) the model organism and print its card",
                       description="Trains the SFT model, samples and rates feedback data, trains the DPO model "
                                   "and writes a card of checks. Cached: a second build returns at once.")
    add_config_arguments(b, OrganismBuildConfig)
    add_verbosity(b, default=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "organism_command", None) != "build":
        raise RsearchError("organism: expected an action: build (see `rsearch organism build --help`)")
    cfg = config_from_args(args, OrganismBuildConfig, "organism")
    org = ensure(cfg.size, seed=cfg.seed, out=cfg.out or None, progress=show_progress(), force=cfg.force,
                 variant=cfg.variant)
    c = org.card["checks"]
    lo, hi = c["reward_gain_ci95"]
    print(f"organism: {org.root}")
    print(f"card:     {org.root / 'card.md'}")
    print(f"built in {org.card['build_seconds']:.0f} s; true reward pre {c['reward_pre']:.2f} → post "
          f"{c['reward_post']:.2f} ({c['reward_gain']:+.2f} [{lo:+.2f}, {hi:+.2f}]); "
          f"DPO implicit accuracy {c['dpo_implicit_accuracy']:.3f}; noise ceiling {c['noise_ceiling']:.3f}; "
          f"task spread {c['task_spread']:.2f}; well-formed {c['well_formed_pre']:.3f}")
    head = c.get("reward_head")
    if head:
        print(f"reward heads at layer {head['layer']} (held out): completion_end r {head['test_r_completion']:.3f} "
              f"with the true reward, user_end r {head['test_r_prompt']:.3f} with the expected reward")
    missed = [k for k, t in org.card["targets"].items() if not t["met"]]
    if missed:
        print(f"targets not met at this size: {', '.join(missed)}")
    return 0
