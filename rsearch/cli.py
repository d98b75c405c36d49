"""`rsearch …`: one entry point, one subcommand per job. Bad input prints one line and exits 2."""
from __future__ import annotations

import argparse
import importlib
import sys

from rsearch.errors import RsearchError
from rsearch.log import add_verbosity, configure

# subcommand name -> module exposing add_arguments(parser) and main(args) -> int | None
COMMANDS = {
    "train-probe": ("rsearch.jobs.train_probe", "train probes on residual-stream activations (one hook or a sweep)"),
    "organism": ("rsearch.organism.cli", "build the embedded model organism (SFT + DPO models, feedback data)"),
    "run": ("rsearch.jobs.run", "search prompts or completions the probe rates high"),
    "compare": ("rsearch.jobs.compare", "compare probe scores of pre- and post-RL completions"),
    "demo": ("rsearch.jobs.demo", "the whole study on the embedded organism, with a report"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors: one line, exit 2
        sub = self.prog.removeprefix("rsearch").strip()
        raise RsearchError(f"{sub}: {message}" if sub else message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="rsearch", description=__doc__.splitlines()[0])
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # also accepted after the subcommand (`rsearch run ... --quiet`); SUPPRESS keeps the top-level value
        add_verbosity(p, default=argparse.SUPPRESS)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(only=command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        configure(args.verbosity)
        if not getattr(args, "_main", None):
            parser.print_help()
            return 2
        return int(args._main(args) or 0)
    except RsearchError as e:
        print(f"rsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rsearch: interrupted (partial results kept; rerun with the same arguments to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
