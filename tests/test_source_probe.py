"""The source probe: tells which model wrote a completion, split by prompt, across layers."""
import torch

from rsearch.analysis.source_probe import fit_source_probes, source_probe, split_groups
from test_compare import compared_on_organism, make_subjects


def _synthetic(shift: float, n_prompts=60, k=3, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels, groups, xs = [], [], []
    direction = torch.randn(d, generator=g)
    for p in range(n_prompts):
        base = torch.randn(d, generator=g)  # a prompt's own offset: shared by both models' completions
        for model in (0, 1):
            for _ in range(k):
                xs.append(base + 0.5 * torch.randn(d, generator=g) + shift * model * direction)
                labels.append(model)
                groups.append(p)
    x = torch.stack(xs)
    return {("blocks.0.hook_resid_pre", "-1"): x, ("blocks.1.hook_resid_pre", "-1"): torch.randn(x.shape, generator=g)}, labels, groups


def test_split_is_by_prompt():
    groups = [i // 4 for i in range(200)]
    parts = split_groups(groups, (0.6, 0.2, 0.2), seed=3)
    seen = [{groups[i] for i in p} for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(p) for p in parts) == 200 and [len(s) for s in seen] == [30, 10, 10]


def test_reads_a_planted_source_direction_and_not_noise():
    acts, labels, groups = _synthetic(shift=1.0)
    got = fit_source_probes(acts, labels, groups, lengths=[5.0] * len(labels), seed=0)
    by_layer = {r["layer"]: r for r in got["rows"]}
    assert by_layer[0]["test"]["accuracy"] > 0.85 and by_layer[0]["test"]["auroc"] > 0.9
    assert abs(by_layer[1]["test"]["accuracy"] - 0.5) < 0.2  # pure noise
    assert got["best"]["layer"] == 0
    t = got["best"]["test"]
    assert t["accuracy_lo"] < t["accuracy"] < t["accuracy_hi"]
    assert got["n"]["test"] == 12 * 6  # 12 held-out prompts × 2 models × 3 completions
    assert abs(got["length_control"]["accuracy"] - 0.5) < 0.2  # lengths carry nothing here


def test_accuracy_interval_resamples_prompts():
    """8 completions per prompt, all right or all wrong together: 30 prompts' worth of evidence, not 240."""
    from rsearch.analysis.source_probe import _accuracy
    from rsearch.probes.metrics import wilson_interval

    right = torch.tensor([1.0] * 20 + [0.0] * 10).repeat_interleave(8)        # per row: prompt right or wrong
    y = torch.ones(240)
    groups = [i // 8 for i in range(240)]
    got = _accuracy(2 * right - 1, y, groups)
    assert got["accuracy"] == 20 / 30 and got["n_prompts"] == 30
    lo, hi = wilson_interval(160, 240)
    assert (got["accuracy_hi"] - got["accuracy_lo"]) > 2 * (hi - lo)


def test_on_the_tiny_organism():
    """The tiny organism's DPO model writes differently from its SFT model; a source probe reads that."""
    from rsearch.chat import encode_conversation
    from rsearch.models import load_model

    s = make_subjects()
    result = compared_on_organism()
    model, tok = load_model(s["post"], device="cpu")
    table = [r for r in result.table if r["probe_score"] is not None]
    rows = [encode_conversation(tok, r["prompt"], r["completion"]) for r in table]
    got = source_probe(model, tok, rows, [int(r["model"] == "post") for r in table],
                       [r["prompt_index"] for r in table], [r["length"] for r in table], layers=s["layers"],
                       positions=("completion_mean", "-1"))
    assert {(r["layer"], r["position"]) for r in got["rows"]} == {(L, p) for L in s["layers"]
                                                                  for p in ("completion_mean", "-1")}
    assert got["n_prompts"]["test"] == 24 and got["n"]["test"] == sum(got["n"].values()) - got["n"]["train"] - got["n"]["val"]
    for r in got["rows"]:
        assert 0 <= r["test"]["accuracy"] <= 1 and r["test"]["n"] == got["n"]["test"]
    by = {(r["layer"], r["position"]): r["test"] for r in got["rows"]}
    # at the embeddings (layer 0) the last token is the template's newline for every row: nothing to read
    assert by[(0, "-1")]["auroc"] == 0.5
    # over the completion, DPO's change of style is readable (held-out AUROC averaged over layers)
    mean_auroc = sum(by[(L, "completion_mean")]["auroc"] for L in s["layers"]) / len(s["layers"])
    assert mean_auroc > 0.55, got["rows"]
