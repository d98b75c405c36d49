"""Session-wide fixtures: one tiny organism build and one Ray cluster per test session."""
from __future__ import annotations

import os

import pytest
import torch

# tiny models: a second intra-op thread costs more than it saves, and on a loaded 2-core machine far more;
# the Ray workers use one thread too, so their floats match the in-process run's exactly
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _rsearch_home(tmp_path_factory):
    """Keeps every cache (organism, activation stores) inside the session's temp dir."""
    home = os.environ.get("RSEARCH_TEST_HOME") or str(tmp_path_factory.mktemp("rsearch_home"))
    os.environ["RSEARCH_HOME"] = home
    yield home


@pytest.fixture(scope="session")
def tiny_organism(_rsearch_home):
    """The tiny model organism (SFT + DPO models, feedback data, card), built once per test session."""
    from rsearch.organism import ensure

    return ensure("tiny", seed=0, progress=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, no dashboard, bound to 127.0.0.1) shared by every Ray test, shut down at
    the end. Ray is a hard dependency: if it cannot be imported or started, the Ray tests fail, never skip."""
    import ray

    from rsearch.distributed import start_local_ray

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
           "RSEARCH_HOME": os.environ["RSEARCH_HOME"], "OMP_NUM_THREADS": "1"}
    start_local_ray(2, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_search(tmp_path_factory):
    """A tiny Llama saved as an HF directory (word-level tokenizer, zephyr template) and a random linear probe
    on it: (model_dir, probe_path). For the search tests; loads fast, runs in milliseconds."""
    from rsearch.probes import make_probe, save_probe
    from tiny import save_tiny_model

    root = tmp_path_factory.mktemp("tiny_search")
    model_dir = save_tiny_model(root / "model", "llama")
    probe = make_probe("linear", 32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=gen))
    probe_path = root / "probe.safetensors"
    save_probe(probe_path, probe, {"model": str(model_dir), "hook": "blocks.2.hook_resid_pre",
                                   "position": "user_end", "objective": "regression"})
    return model_dir, probe_path
