"""`rsearch …`: one entry point, one subcommand per job. Bad input prints one line and exits 2."""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import shlex
import signal
import sys
import threading

from rsearch.errors import RsearchError, one_line
from rsearch.log import add_verbosity, configure

# subcommand name -> module exposing add_arguments(parser) and main(args) -> int | None
# a full, read-only or forbidden disk: one line, not a traceback (any other OSError is a bug and shows as one)
DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)

COMMANDS = {
    "train-probe": ("rsearch.jobs.train_probe", "train probes on residual-stream activations (one hook or a sweep)"),
    "organism": ("rsearch.organism.cli", "build the embedded model organism (SFT + DPO models, feedback data)"),
    "run": ("rsearch.jobs.run", "search prompts or completions the probe rates high"),
    "compare": ("rsearch.jobs.compare", "compare probe scores of pre- and post-RL completions"),
    "demo": ("rsearch.jobs.demo", "the whole study on the embedded organism, with a report"),
    "rate": ("rsearch.jobs.rate", "re-rate a feedback dataset with another rater (reward model, callable or judge model)"),
    "feedback": ("rsearch.jobs.feedback", "build a feedback dataset: sample k answers per prompt, rate, pair best "
                 "against worst"),
    "train-policy": ("rsearch.jobs.train_policy", "make a post-RL model: DPO, IPO or SFT of a chat model on feedback "
                     "data (TRL)"),
    "steer": ("rsearch.jobs.steer", "steer along the probe direction, patch between the models: is it used?"),
}


# jobs that set torch's threads themselves (the demo and feedback from their configs, the organism build from
# $RSEARCH_THREADS)
OWN_THREADS = ("demo", "organism", "feedback")


def default_threads() -> int:
    """$RSEARCH_THREADS, else 1: on a machine busy with other work torch's default (one per core) made sampling a
    batch on 2 cores make no progress in 5 minutes against 32 s with one thread; alone, a second gains ≤ 2×."""
    value = os.environ.get("RSEARCH_THREADS", "1")
    if not value.isdigit():
        raise RsearchError(f"RSEARCH_THREADS must be a whole number (0: torch's default), got {value!r}")
    return int(value)


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
        if name not in OWN_THREADS:
            p.add_argument("--threads", type=int, default=None, dest="torch_threads", metavar="N",
                           help="torch's intra-op threads (default: $RSEARCH_THREADS or 1; 0: torch's default)")
        if only is None or only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_main=module.main)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C (finished results flushed, workers shut down)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _quiet_hugging_face() -> None:
    """-q: no progress bars from transformers / huggingface_hub either (model loading draws one)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is first imported
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()


def resume_command(argv: list[str]) -> str:
    """The exact command that continues an interrupted run: `run` needs --resume, the other jobs resume from
    their caches when given the same arguments."""
    again = list(argv)
    if again and again[0] == "run" and "--resume" not in again:
        again.append("--resume")
    return shlex.join(["rsearch", *again])


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # the command line, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        parser = build_parser(only=command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        configure(args.verbosity)
        if args.verbosity < 0:
            _quiet_hugging_face()
        if not getattr(args, "_main", None):
            parser.print_help()
            return 2
        return _with_threads(args)
    except RsearchError as e:
        print(f"rsearch: error: {one_line(e, 1000)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"rsearch: error: {e.strerror or errno.errorcode.get(e.errno, 'disk error')}{where} (nothing that "
              "looks complete was left half-written; free space or choose another --out)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"rsearch: {what}; finished results are kept. To continue: {resume_command(argv)}", file=sys.stderr)
        code = 143 if isinstance(e, Terminated) else 130
        if as_program:
            # every finished result is on disk and the locks are released (the `with` blocks have unwound); the
            # interpreter's teardown of torch and transformers takes seconds more on a busy machine: skip it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _with_threads(args: argparse.Namespace) -> int:
    if not hasattr(args, "torch_threads"):
        return int(args._main(args) or 0)
    import torch  # here, so that `rsearch --help` does not wait for torch

    threads = default_threads() if args.torch_threads is None else args.torch_threads
    if threads < 0:
        raise RsearchError(f"--threads: must be ≥ 0 (0: torch's default), got {threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return int(args._main(args) or 0)
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    sys.exit(main())
