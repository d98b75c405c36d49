"""The demo's stage cache cannot go stale: changing any setting reruns exactly the stages that read it and
their downstream stages, and nothing else. Keys are computed, no stage runs, so this takes milliseconds.

The cache once hand-listed each stage's settings, and the lists drifted: the sweep's key left out
`store_dtype` and the comparison's left out `sample_batch_size` (the sampling seeds depend on the batch), so
changing either silently reused a stale stage. Here every field of every section is changed in turn, so a
setting missing from a key fails this test whatever its name.
"""
from __future__ import annotations

import dataclasses
import typing

import pytest

from rsearch.config import Config
from rsearch.errors import RsearchError
from rsearch.jobs.demo import STAGES, stage_keys
from rsearch.jobs.demo_config import WIRED, DemoConfig
from rsearch.subjects import Subjects

SUBJECTS = Subjects(pre="/nonexistent/pre", post="/nonexistent/post", dataset="/nonexistent/data", rater="organism",
                    beta=0.1, beta_source="organism card", organism=True, organism_size="demo")
ALL = ("subjects",) + STAGES
DOWNSTREAM = {"subjects": ALL, "probes": ("probes", "compare", "source", "direction", "search", "causal"),
              "compare": ("compare", "source", "direction"), "source": ("source",), "direction": ("direction",),
              "search": ("search",), "causal": ("causal",)}
READER = {"train_probe": "probes", "compare": "compare", "source": "source", "direction": "direction",
          "search": "search", "causal": "causal"}
# the comparison's settings the search check takes where its own are None (SearchCheckConfig.resolved)
SEARCH_READS_FROM_COMPARE = {"max_new_tokens", "sample_batch_size", "batch_size", "n_boot"}

# another valid value of each string (or mapping) setting; numbers and booleans are changed by type
OTHER = {"pre": "some/pre", "post": "some/post", "dataset": "some/data", "test_split": "test_other",
         "organism_size": "tiny", "organism_variant": "reward-reading", "dtype": "bfloat16", "rater": "none",
         "train_split": "train_other", "alpha_unit": "spread",
         "hook": "blocks.1.hook_resid_pre", "position": "user_end", "hook_kind": "resid_post", "probe_kind": "mlp",
         "objective": "regression", "fitter": "sgd", "store_dtype": "float16", "revision": "main",
         "revision_pre": "main", "revision_post": "main", "strategies": ("random", "beam"),
         "options": {"gcg": {"n_tokens": 4}}, "prefixes": ("hey ,", "what is", "tell me"), "model": "some/model",
         "probe": "some/probe.safetensors", "prompts": "test_other", "out": "runs/elsewhere", "device": "cpu",
         "store_dir": "some/store", "alphas": (-2.0, 0.0, 2.0), "models": ("post", "pre"),
         "positions_from": "completion", "patch_positions": ("user_end",), "patch_layers": (0,),
         "too_long": "truncate", "ray_address": "127.0.0.1:6379", "decode": "plain", "rater_spec": "none", "save": "layer1.pt"}


def other_value(name: str, value, hint):
    if name in OTHER:
        return OTHER[name]
    if hint is bool:
        return not value
    if name == "positions":
        return tuple(value) + ("completion_frac:0.1",)
    if name == "layers":
        return (1,)
    if value is None:  # an optional number: any value sets it
        return 7 if int in typing.get_args(hint) else 0.3
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.01
    raise AssertionError(f"no other value known for {name}={value!r}: add one to OTHER")


def leaf_fields():
    """(section or None, field name, type) of every setting of DemoConfig, sections included."""
    hints = typing.get_type_hints(DemoConfig)
    for f in dataclasses.fields(DemoConfig):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Config):
            sub_hints = typing.get_type_hints(hint)
            for g in dataclasses.fields(hint):
                yield f.name, g, sub_hints[g.name]
        else:
            yield None, f, hint


def expected_stages(section: str | None, name: str) -> set[str]:
    if section is None:
        return set(ALL)  # shared settings: the subjects stage's key, upstream of every stage
    stages = set(DOWNSTREAM[READER[section]])
    if section == "compare" and name in SEARCH_READS_FROM_COMPARE:
        stages |= set(DOWNSTREAM["search"])
    return stages


def test_no_stale_stage_on_any_field_change():
    base_cfg = DemoConfig()
    base = stage_keys(base_cfg, SUBJECTS)
    assert set(base) == set(ALL) and len(set(base.values())) == len(ALL)
    tested = set()
    for section, f, hint in leaf_fields():
        where = f"{section}.{f.name}" if section else f.name
        if section is None and f.name in ("stages", "stage_options", "skip"):
            continue  # extra stages: test_an_extra_stage_is_keyed_by_its_options_and_inputs_alone
        current = getattr(getattr(base_cfg, section) if section else base_cfg, f.name)
        new = other_value(f.name, current, hint)
        change = {section: {f.name: new}} if section else {f.name: new}
        if section and f.name in WIRED.get(section, ()):
            with pytest.raises(RsearchError, match="set by the demo"):
                base_cfg.replace(**change)
            continue
        cfg = base_cfg.replace(**change)
        keys = stage_keys(cfg, SUBJECTS)
        rerun = {s for s in ALL if keys[s] != base[s]}
        want = set() if f.metadata.get("runtime") else expected_stages(section, f.name)
        assert rerun == want, f"changing {where} reruns {sorted(rerun)}, expected {sorted(want)}"
        tested.add(where)
    # the two settings the hand-kept lists forgot are among those checked, and do rerun their stage
    assert {"train_probe.store_dtype", "compare.sample_batch_size"} <= tested
    assert len(tested) >= 50


def test_search_takes_the_comparisons_sampling_settings_unless_set():
    cfg = DemoConfig()
    resolved = cfg.search.resolved(cfg.compare)
    assert (resolved.max_new_tokens, resolved.sample_batch_size, resolved.n_boot) == (48, 256, 2000)
    own = cfg.replace(search={"max_new_tokens": 12}).search.resolved(cfg.compare)
    assert own.max_new_tokens == 12 and own.sample_batch_size == 256


def test_an_extra_stage_is_keyed_by_its_options_and_inputs_alone():
    """An extra stage leaves the built-in stages' keys as they were; its options change its key alone, and a change
    upstream of it (the sweep) reruns it too."""
    base = stage_keys(DemoConfig(), SUBJECTS)
    cfg = DemoConfig().replace(stages=("tests.toy:ToyStage",))
    with_toy = stage_keys(cfg, SUBJECTS)
    assert {k: v for k, v in with_toy.items() if k != "toy"} == base and "toy" in with_toy
    other = stage_keys(cfg.replace(stage_options={"toy": {"top": 5}}), SUBJECTS)
    assert {k for k in other if other[k] != with_toy[k]} == {"toy"}
    upstream = stage_keys(cfg.replace(train_probe={"max_train": 10}), SUBJECTS)
    assert upstream["toy"] != with_toy["toy"] and upstream["source"] != with_toy["source"]


def test_skipping_a_stage_drops_its_readers_and_keeps_the_other_keys():
    base = stage_keys(DemoConfig(), SUBJECTS)
    skipped = stage_keys(DemoConfig().replace(skip=("compare",)), SUBJECTS)
    assert set(skipped) == {"subjects", "probes", "search", "causal"}  # source and direction read compare
    assert all(skipped[k] == base[k] for k in skipped)


@pytest.mark.parametrize("change, message", [
    ({"stages": ("tests.toy:NoSuch",)}, "tests.toy has no 'NoSuch'"),
    ({"stages": ("tests.toy:ToyResult",)}, "not a subclass of rsearch.study.Stage"),
    ({"stages": ("nowhere.at_all:Stage",)}, "cannot import nowhere.at_all"),
    ({"stages": ("probez",)}, "unknown stage 'probez'"),
    ({"skip": ("comparee",)}, "skip: no stage 'comparee'"),
    ({"stage_options": {"toy": {"top": 2}}}, "stage_options.toy: no stage 'toy'"),
    ({"stages": ("tests.toy:ToyStage",), "stage_options": {"toy": {"tpo": 2}}}, "unknown option 'tpo'"),
    ({"stages": ("tests.toy:ToyStage",), "stage_options": {"toy": {"top": 0}}}, "top: must be at least 1"),
    ({"search": {"strategies": ("beam", "nosuch")}}, "unknown strategy 'nosuch'"),
    ({"search": {"options": {"beem": {"width": 2}}}}, "unknown strategy 'beem'"),
    ({"search": {"options": {"beam": {"widht": 2}}}}, "unknown option 'widht'"),
])
def test_bad_stages_and_strategies_fail_before_any_stage_runs(change, message):
    with pytest.raises(RsearchError, match=message):
        DemoConfig().replace(**change)
