"""Temporary: parallel build sweep (one process per config, 2 threads each). Deleted after tuning."""
import json, os, subprocess, sys, time
from pathlib import Path

VARIANTS = {
    "demo": {},
    "d45k": dict(sft_examples=45000),
    "d2ep": dict(sft_epochs=2),
    "d6L": dict(n_layers=6, d_model=96, d_ff=288, sft_examples=40000),
    "d45kb128": dict(sft_examples=45000, sft_batch=128, sft_lr=5e-3, dpo_lr=5e-4),
    "dpo5e4": dict(sft_examples=45000, dpo_lr=5e-4, dpo_epochs=4),
    "tiny": "tiny",
    "tiny20k": dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=192, sft_examples=20000, sft_batch=128,
                    sft_lr=5e-3, n_train_prompts=600, n_test_prompts=150, dpo_epochs=3, bootstrap=500),
}

def one(name):
    import torch
    from rsearch.organism.config import OrganismConfig
    from rsearch.organism.build import build
    v = VARIANTS[name]
    cfg = OrganismConfig.tiny() if v == "tiny" else OrganismConfig.demo().replace(size="custom-" + name, **v) if v else OrganismConfig.demo()
    org = build(cfg, f"/tmp/sweep/{name}", progress=False)
    print(json.dumps({"name": name, "card": org.card}))

if __name__ == "__main__":
    if len(sys.argv) > 1:
        one(sys.argv[1]); sys.exit()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=os.getcwd())
    procs = {n: subprocess.Popen([sys.executable, __file__, n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for n in VARIANTS}
    res = {}
    for n, p in procs.items():
        so, se = p.communicate()
        res[n] = json.loads(so.strip().splitlines()[-1])["card"] if p.returncode == 0 else {"error": se[-3000:]}
        c = res[n].get("checks")
        print(n, res[n].get("build_seconds"), res[n].get("stage_seconds"), {k: c[k] for k in ("reward_gain", "reward_gain_ci95", "dpo_implicit_accuracy", "noise_ceiling", "task_spread", "well_formed_pre", "well_formed_post", "pre_reward_by_task", "sft_final_loss", "features_pre", "features_post")} if c else res[n], flush=True)
    (out / "sweep.json").write_text(json.dumps(res, indent=1))
