"""`rsearch demo`: the whole study, with a report that answers each research question from its numbers.

Stages (each writes its outputs atomically under `--out` and a `stage.json` with the hash of everything it
depends on; a rerun skips a stage whose hash matches, so a second run reuses what is cached):

1. subjects    the embedded organism (built once, cached under $RSEARCH_HOME), or the configured pre/post models
               and dataset (configs/zephyr.yaml's `demo:` section runs the real study this way);
2. probes      a sweep over every layer × position (user_end, completion_start, completion fractions,
               completion_end, -1, completion_mean), one extraction pass; every cell beside the bag-of-words,
               DPO-reward and log-prob baselines on the same test pairs; user_end on the expected reward of the
               policy's answer (k sampled answers, rated); the best probe by validation;
3. compare     k completions per prompt from each model, scored by the best probe, the DPO implicit reward,
               length and the true rater;
4. source      a probe that tells which model wrote a completion, across layers, split by prompt;
5. direction   per layer, the cosine of the RL update (post − pre activations on the same inputs) with the
               reward probe's direction at that layer, against random directions;
6. search      every strategy at the same budget on the same prefixes, with the user_end probe as objective;
               what each found is checked with the true rater (completions sampled from the post-RL model)
               against the unsearched prefix and random test prompts;
7. causal      `rsearch steer` with the best probe: the post-RL model sampled while its residual stream is pushed
               along the probe's direction (and two nulls at the same norms), dose–response of the true reward,
               probe score, fluency and length; and the pre/post patching of the DPO margin per layer;
8. report      report.json (every number), report.md and a self-contained report.html.

The real study on a GPU: `rsearch demo --config zephyr` (see the README's "The real study").
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from rsearch.config import Config, add_config_arguments, config_from_args
from rsearch.io_utils import output_dir
from rsearch.jobs.demo_config import DemoConfig
from rsearch.jobs.stages import StageCache, settings_of, stage_key
from rsearch.lm import ModelCache
from rsearch.report.build import build_report
from rsearch.report.render import write_report
from rsearch.study.stage import SUBJECTS, Stage, StudyContext, study_stages
from rsearch.study.stamps import content_stamps
from rsearch.subjects import Subjects, resolve_subjects

log = logging.getLogger("rsearch.demo")

STAGES = tuple(s.name for s in study_stages())  # the built-in stages, in the order they run


# ----- what each stage reads: its key -----

def shared_settings(cfg: DemoConfig) -> dict[str, Any]:
    """The settings every stage shares (subjects, seed, dtype, test split): DemoConfig's own fields, less the
    list of extra stages and their options (which only those stages read)."""
    return {k: v for k, v in cfg.key_dict().items()
            if not isinstance(getattr(cfg, k), Config) and k not in ("stages", "stage_options", "skip")}


def subjects_settings(cfg: DemoConfig, subjects: Subjects) -> dict[str, Any]:
    """The subjects stage's key: the shared settings, the resolved subjects and content stamps of the models'
    weights and the dataset's files (or their hub revisions)."""
    return {"shared": shared_settings(cfg), "subjects": subjects.to_dict(),
            "stamps": content_stamps(subjects, cfg.revision_pre, cfg.revision_post)}


def stage_plan(cfg: DemoConfig, subjects: Subjects, stages: list[Stage] | None = None
               ) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    """stage → (the settings its key hashes, its upstream stages). Each stage runs with exactly these configs."""
    ctx = StudyContext(cfg=cfg, subjects=subjects, out=Path(cfg.out))
    plan = {SUBJECTS: (subjects_settings(cfg, subjects), ())}
    for stage in stages if stages is not None else study_stages(cfg.stages, cfg.skip):
        plan[stage.name] = (settings_of(*stage.settings(ctx)), stage.reads)
    return plan


def stage_keys(cfg: DemoConfig, subjects: Subjects) -> dict[str, str]:
    """Every stage's key, computed without running anything."""
    keys: dict[str, str] = {}
    for name, (settings, upstream) in stage_plan(cfg, subjects).items():
        keys[name] = stage_key(name, settings, {u: keys[u] for u in upstream})
    return keys


# ----- the pipeline -----

def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Runs every stage (reusing cached ones) and writes the report; returns report.json's content."""
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    st = StageCache(out, log)
    st.say(f"rsearch demo → {out}")
    if not (cfg.pre and cfg.post and cfg.dataset):
        st.say(f"subjects: the embedded organism ({cfg.organism_size}, {cfg.organism_variant}); built once, then "
               "cached")
    subjects = resolve_subjects(pre=cfg.pre, post=cfg.post, dataset=cfg.dataset, rater=cfg.rater, beta=cfg.beta,
                                organism_size=cfg.organism_size, seed=cfg.seed, organism_variant=cfg.organism_variant)
    st.say(f"subjects: pre {subjects.pre}, post {subjects.post}, data {subjects.dataset}, "
           f"rater {subjects.rater or 'none'}")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_stages(cfg, st, subjects, out)
    finally:
        torch.set_num_threads(threads)


def _run_stages(cfg: DemoConfig, st: StageCache, subjects: Subjects, out: Path) -> dict[str, Any]:
    stages = study_stages(cfg.stages, cfg.skip)
    plan = stage_plan(cfg, subjects, stages)
    st.keys[SUBJECTS] = stage_key(SUBJECTS, plan[SUBJECTS][0], {})
    ctx = StudyContext(cfg=cfg, subjects=subjects, out=out, models=ModelCache(cfg.dtype, cfg.device))
    results: dict[str, Any] = {}
    for stage in stages:
        settings, upstream = plan[stage.name]
        inputs = _inputs(stage, stages, results)
        results[stage.name] = st.run(stage.name, settings, upstream, stage.Result,
                                     lambda d, stage=stage, inputs=inputs: stage.run(ctx, inputs, d))

    st.say("report: writing report.json, report.md, report.html")
    report = build_report(cfg=cfg.to_dict(), subjects=subjects, stages=stages, results=results, out=out,
                          seconds=time.perf_counter() - st.t0, reused=st.reused)
    write_report(out, report)
    st.say(f"done: {out / 'report.html'}")
    return report


def _inputs(stage: Stage, stages: list[Stage], results: dict[str, Any]) -> dict[str, Any]:
    """The results `stage` reads, and those its inputs read in turn (an analysis of the comparison also sees the
    sweep that chose the comparison's probe)."""
    by_name = {s.name: s for s in stages}
    wanted, todo = set(), list(stage.reads)
    while todo:
        name = todo.pop()
        if name != SUBJECTS and name not in wanted:
            wanted.add(name)
            todo += by_name[name].reads
    return {name: results[name] for name in wanted}


# ----- command line -----

def add_arguments(parser) -> None:
    add_config_arguments(parser, DemoConfig, config_file="YAML file (top-level keys, or a `demo:` section), or a "
                         "shipped recipe by name: demo (the defaults) or zephyr (the real study)")
    parser.epilog = ("The real study: `rsearch demo --config zephyr` on a GPU with hub access runs the same stages "
                     "on HuggingFaceH4/mistral-7b-sft-beta → zephyr-7b-beta and ultrafeedback_binarized (see the "
                     "README's 'The real study').")


def main(args) -> int:
    cfg = config_from_args(args, DemoConfig, "demo")
    with output_dir(cfg.out):
        report = run_demo(cfg)
    print()
    for q in report["answers"]:
        print(f"{q['id']}. {q['question']}\n   {q['answer']}\n")
    print(f"report: {Path(cfg.out) / 'report.md'}  ·  {Path(cfg.out) / 'report.html'}")
    return 0
