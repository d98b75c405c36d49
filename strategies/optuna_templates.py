"""`optuna`: a template with slots and their choices, searched with an Optuna sampler (TPE by default).

By default (`template: dataset`) the template is mined from the probe's own training prompts
(rsearch.strategies.mined_templates: their openers, task phrasings and closers, never their ratings), so
nothing about the reward is written into it. Or give a YAML file:

    template: "{lead} {task} {tail}"
    slots:
      lead: ["", "please ,"]
      task: ["compliment my cooking .", "what is 3 plus 5 ?"]
      tail: ["", "thanks ."]

Each trial picks one choice per slot; the filled template (spaces collapsed) continues the prefix as one
message (`Target.encode_continuation`: the prefix joined to it by a space, rendered and tokenized as a whole),
and the span is that message's share of the tokens. The study lives in memory, in a journal file
(`journal:PATH`, or a path ending in .log / .journal) or an RDB URL (`sqlite:///…`, `postgresql://…`) that
several workers share; each prefix has its own study. A combination already scored is told again from the
cache, not re-scored, so repeats cost no budget.
"""
from __future__ import annotations

import hashlib
import math
import re
import string
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from rsearch.config import Config, check, load_yaml
from rsearch.errors import RsearchError, one_line
from rsearch.strategies.base import Candidate, Scored, Strategy, StrategyContext, register
from rsearch.strategies.mined_templates import TEMPLATE, mined_slots

SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class Template:
    text: str
    slots: tuple[tuple[str, tuple[str, ...]], ...]  # (slot, choices) in the template's order

    def fill(self, choice: dict[str, str]) -> str:
        return " ".join(self.text.format(**choice).split())


def template_path(path: str) -> Path:
    """A template YAML file (one line naming a missing file)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RsearchError(f"optuna.template: no template file {path!r} (give a YAML file, or 'dataset' to mine "
                           "one from the probe's training prompts)")
    return p


def load_template(path: str) -> Template:
    """Reads and checks a template file: every {slot} has a non-empty list of string choices, and vice versa."""
    path = template_path(path)
    data = load_yaml(path)
    where = f"template {path}"
    text, slots = data.get("template"), data.get("slots")
    if not isinstance(text, str) or not text.strip():
        raise RsearchError(f"{where}: 'template' must be a non-empty string")
    if not isinstance(slots, dict) or not slots:
        raise RsearchError(f"{where}: 'slots' must map each slot name to a list of choices")
    extra = sorted(set(data) - {"template", "slots"})
    if extra:
        raise RsearchError(f"{where}: unknown key {extra[0]!r} (expected template and slots)")
    try:
        fields = [f for f in string.Formatter().parse(text) if f[1] is not None]
    except ValueError as e:
        raise RsearchError(f"{where}: malformed template string ({e})") from None
    names = [f[1] for f in fields]
    for _, n, spec, conversion in fields:
        if spec or conversion:  # a spec pads a choice to any width: past the context the search checks against
            raise RsearchError(f"{where}: placeholder {{{n}{'!' + conversion if conversion else ''}"
                               f"{':' + spec if spec else ''}}} has a format spec or conversion (use {{{n}}})")
    for n in names:
        if not re.fullmatch(r"[A-Za-z_]\w*", n):
            raise RsearchError(f"{where}: bad placeholder {{{n}}} (use {{name}})")
    if not names:
        raise RsearchError(f"{where}: the template has no {{slot}} placeholders")
    missing = [n for n in names if n not in slots]
    if missing:
        raise RsearchError(f"{where}: placeholder {{{missing[0]}}} has no slot")
    unused = [s for s in slots if s not in names]
    if unused:
        raise RsearchError(f"{where}: slot {unused[0]!r} is not used in the template")
    out = []
    for name in dict.fromkeys(names):
        choices = slots[name]
        if not isinstance(choices, list) or not choices:
            raise RsearchError(f"{where}: slot {name!r} needs a non-empty list of choices")
        if not all(c is None or (isinstance(c, (str, int, float)) and not isinstance(c, bool)) for c in choices):
            raise RsearchError(f"{where}: slot {name!r} has a choice that is not a string")
        out.append((name, tuple(dict.fromkeys("" if c is None else str(c) for c in choices))))
    return Template(text, tuple(out))


@dataclass(frozen=True)
class OptunaConfig(Config):
    template: str = "dataset"       # "dataset": mined from the probe's training prompts; else a YAML file
    dataset: str = ""               # where "dataset" mines (hub id, file or directory); "": the probe's dataset
    split: str = ""                 # the split it mines; "": the probe's training split (else train_prefs)
    n_prompts: int = 2000           # prompts sampled (seeded) to mine
    n_choices: int = 12             # mined choices per slot at most
    sampler: str = "tpe"            # tpe | random
    storage: str | None = None      # None: memory; journal:PATH or PATH.log: journal file; else an RDB URL
    study_name: str = "rsearch"     # studies are named f"{study_name}-{hash of prefix and target}"
    n_startup_trials: int = 10      # TPE's random trials before modelling
    batch: int = 8                  # trials asked at once (TPE's constant liar keeps them apart)

    def __post_init__(self):
        check(self.sampler in SAMPLERS, f"optuna.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        check(self.n_startup_trials >= 0, f"optuna.n_startup_trials must be ≥ 0, got {self.n_startup_trials}")
        check(self.batch >= 1, f"optuna.batch must be at least 1, got {self.batch}")
        check(self.n_prompts >= 2, f"optuna.n_prompts must be at least 2, got {self.n_prompts}")
        check(self.n_choices >= 1, f"optuna.n_choices must be at least 1, got {self.n_choices}")
        if self.template != "dataset":
            load_template(self.template)  # fails now, naming the problem, rather than mid-run

    def make_template(self, probe_metadata: dict[str, Any]) -> Template:
        """The YAML file's template, or the one mined from the dataset (this config's, else the probe's)."""
        if self.template != "dataset":
            return load_template(self.template)
        dataset = self.dataset or str(probe_metadata.get("dataset") or "")
        if not dataset:
            raise RsearchError("optuna: the probe names no dataset to mine a template from: pass --set dataset=DATA "
                               "or --set template=FILE.yaml")
        probe_split = None if self.dataset else probe_metadata.get("train_split")  # the probe's own training split
        split = self.split or str(probe_split or "train_prefs")
        return Template(TEMPLATE, mined_slots(dataset, split, self.n_prompts, self.n_choices))


def make_storage(spec: str | None):
    import optuna

    if spec is None or spec in ("", "memory"):
        return optuna.storages.InMemoryStorage()
    if spec.startswith("journal:") or spec.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" in spec:
        return spec  # an RDB URL; Optuna opens it
    raise RsearchError(f"optuna.storage {spec!r}: use memory, journal:PATH or an RDB URL such as sqlite:///x.db")


@register
class OptunaTemplates(Strategy):
    name = "optuna"
    Config = OptunaConfig

    def setup(self, context: StrategyContext) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.context = context
        self.template = self.config.make_template(context.probe_metadata)
        # every choice must be made of tokens a search may use
        for slot, choices in self.template.slots:
            for c in choices:
                if c.strip() and not context.valid(context.target.encode(c)):
                    raise RsearchError(f"optuna.template: slot {slot!r} choice {c!r} has tokens unknown to the "
                                       "model's tokenizer")
        first = self.template.fill({slot: next((c for c in choices if c.strip()), "") for slot, choices in
                                    self.template.slots})
        if context.target.encode_continuation(first) is None:
            raise RsearchError(f"optuna: {context.target.message(first)!r} does not tokenize as the prefix's tokens "
                               "followed by the template's (does the prefix end in a space?)")
        if self.config.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=context.seed, n_startup_trials=self.config.n_startup_trials,
                                                 constant_liar=True)
        else:
            sampler = optuna.samplers.RandomSampler(seed=context.seed)
        key = hashlib.sha256(f"{context.target.kind}\x00{context.target.prompt_prefix}".encode()).hexdigest()[:10]
        try:
            self.study = optuna.create_study(study_name=f"{self.config.study_name}-{key}",
                                             storage=make_storage(self.config.storage), sampler=sampler,
                                             direction="maximize", load_if_exists=True)
        except Exception as e:  # a bad RDB URL, a missing driver, a locked file
            raise RsearchError(f"optuna.storage {self.config.storage!r}: {one_line(e)}") from None
        self.space = math.prod(len(c) for _, c in self.template.slots)  # combinations (≥ distinct spans)
        self.cache: dict[tuple[int, ...], float] = {}
        self.pending: list[tuple[object, tuple[int, ...]]] = []

    def _pick(self, trial) -> str:
        return self.template.fill({slot: trial.suggest_categorical(slot, list(choices))
                                   for slot, choices in self.template.slots})

    def ask(self, n: int) -> list[Candidate]:
        import optuna

        self.pending = []
        seen: set[tuple[int, ...]] = set()
        tries = 0
        want = min(n, self.config.batch, self.space - len(self.cache))
        while len(self.pending) < want and tries < 20 * want:
            tries += 1
            trial = self.study.ask()
            ids = self.context.target.encode_continuation(self._pick(trial))  # the message tokenized as a whole
            if ids is None:  # every slot chose the empty string, or the text merges with the prefix
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            elif ids in self.cache:  # already scored: tell the known value, charge nothing
                self.study.tell(trial, self.cache[ids])
            elif ids in seen:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                seen.add(ids)
                self.pending.append((trial, ids))
        return [self.context.candidate(ids) for _, ids in self.pending]

    def tell(self, scored: list[Scored]) -> None:
        import optuna

        by_ids = {s.candidate.ids: s.score for s in scored}
        for trial, ids in self.pending:
            if ids in by_ids:
                self.cache[ids] = by_ids[ids]
                self.study.tell(trial, by_ids[ids])
            else:  # asked but not scored (the budget ran out)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.pending = []
