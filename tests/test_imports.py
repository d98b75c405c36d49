"""No import circles in rsearch (imports inside functions count too: they are the same dependency, deferred),
and every module imports on its own in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder → the package it installs as (pyproject.toml's package-dir mapping)
PACKAGES = {"rsearch": "rsearch", "probes": "rsearch.probes", "strategies": "rsearch.strategies"}


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t in mods and t != name and not name.startswith(t + "."):  # a package's own children aside
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "rsearch.study.stage" in graph["rsearch.jobs.demo"]
    cycle = find_cycle(graph)
    assert cycle is None, " → ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_report_does_not_import_the_jobs():
    graph = import_graph()
    report = [m for m in graph if m.startswith("rsearch.report")]
    assert report and not any(t.startswith("rsearch.jobs") for m in report for t in graph[m])


def test_every_module_imports_alone():
    code = ("import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
            "    [sys.modules.pop(k) for k in list(sys.modules) if k.startswith('rsearch')]\n")
    names = sorted(m for m in modules() if not m.endswith("__main__"))
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_public_api_at_the_package_root(tmp_path):
    import rsearch

    for name in ("Searcher", "ProbeScorer", "load_probe", "save_probe", "fit_probe", "load_model", "extract",
                 "capture", "TrainProbeConfig", "CompareConfig", "DemoConfig", "RunConfig", "OrganismBuildConfig"):
        assert name in rsearch.__all__ and callable(getattr(rsearch, name)), name
    # installed as rsearch.probes / rsearch.strategies: nothing generic at the top level (run outside the repo)
    code = ("import importlib.util as u, sys; from rsearch import Searcher, ProbeScorer, load_probe; "
            "sys.exit(u.find_spec('probes') is not None or u.find_spec('strategies') is not None)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env).returncode == 0


def test_a_shipped_recipe_is_found_by_name(tmp_path, monkeypatch):
    from rsearch.config import CONFIGS_DIR, find_config
    from rsearch.errors import RsearchError

    monkeypatch.chdir(tmp_path)
    assert find_config("zephyr") == CONFIGS_DIR / "zephyr.yaml" and find_config("demo.yaml").name == "demo.yaml"
    (tmp_path / "zephyr.yaml").write_text("demo: {}\n")
    assert find_config("zephyr.yaml").resolve() == tmp_path / "zephyr.yaml"  # a file by that path wins
    import pytest

    with pytest.raises(RsearchError, match="shipped recipes, by name: demo, smollm2, zephyr"):
        find_config("zephry")


def local_imports() -> list[tuple[Path, int, str]]:
    """(file, line, source) of each import of rsearch's own modules inside a function."""
    own = ("rsearch", "probes", "strategies")
    out = []
    for path in modules().values():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." if node.level else node.module or ""]
                else:
                    continue
                if any(n == "." or n.split(".")[0] in own for n in names):
                    out.append((path, node.lineno, ast.unparse(node)))
    return sorted(set(out))


def test_own_imports_at_the_top():
    """Imports of rsearch's own modules go at the module's top; the few deferred ones (a cycle to break, a heavy
    dependency to keep lazy) say why on their line or the line above."""
    found = local_imports()
    assert len(found) <= 10, "\n".join(f"{p.relative_to(ROOT)}:{n}: {s}" for p, n, s in found)
    for path, line, source in found:
        lines = path.read_text().splitlines()
        assert "#" in lines[line - 1] or lines[line - 2].strip().startswith("#"), \
            f"{path.relative_to(ROOT)}:{line}: {source} — say why it is not at the top"
