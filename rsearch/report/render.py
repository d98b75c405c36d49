"""Rendering a report dict as report.md and a self-contained report.html (figures embedded as base64 PNGs).
Text from the data (prompts, completions, paths) appears in code spans."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from rsearch.io_utils import write_json, write_text
from rsearch.report.numbers import ci, fmt, fmt_p, fmt_signed


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _tables(r: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    q1, q2, q3, q4, q5 = r["Q1"], r["Q2"], r["Q3"], r["Q4"], r["Q5"]
    t: dict[str, tuple[list[str], list[list[str]]]] = {}
    t["Q1"] = _q1_table(q1)
    q2_names = {"probe_score": "probe_score", "dpo_reward": "dpo_reward (sanity check: positive by construction)",
                "length": "length", "true_reward": "true_reward" if q2.get("rater") in (None, "organism")
                else f"reward by `{q2['rater']}`"}
    t["Q2"] = (["per completion", "pre", "post", "post − pre [95% CI over prompts]", "Wilcoxon p"],
               [[q2_names[name], fmt(s["mean_pre"]), fmt(s["mean_post"]), f"{fmt_signed(s['diff'])} "
                 f"{ci(s['ci_lo'], s['ci_hi'], True)}", fmt_p(s["p_value"])]
                for name, s in ((n, q2["metrics"].get(n)) for n in ("probe_score", "true_reward", "length", "dpo_reward"))
                if s])
    t["Q3"] = (["layer", "position", "test accuracy [95% CI over prompts]", "AUROC"],
               [[fmt(x["layer"]), f"`{x['position']}`", f"{fmt(x['accuracy'])} {ci(x['accuracy_lo'], x['accuracy_hi'])}",
                 fmt(x.get("auroc"))] for x in q3["rows"]])
    t["Q4"] = (["layer", "cos(update, probe)", "null |cos|, corrected for layers (activation-shaped / shuffled)",
                "isotropic 95th pct", "fixed texts: probe shift (SD) / null", "writes: probe diff (SD) [95% CI] / null",
                "update norm / activation norm"],
               [[fmt(x["layer"]), fmt_signed(x["cos"]),
                 f"{fmt(x['null_abs_cos_family95'])} ({fmt(x['cov_abs_cos_family95'])} / "
                 f"{fmt(x.get('shuffled_abs_cos_family95'))})", fmt(x["isotropic_abs_cos_p95"]),
                 f"{fmt_signed(x['fixed_std_shift'])} / {fmt(x['fixed_std_shift_null_family95'])}",
                 (f"{fmt_signed(x['writes_std_diff'])} {ci(x['writes_std_diff_lo'], x['writes_std_diff_hi'], True)} / "
                  f"{fmt(x['writes_null_family95'])}") if "writes_std_diff" in x else "n/a",
                 fmt(x["update_rel_norm"])] for x in q4["rows"]])
    head = ["strategy", "mean probe score", "probe vs prefix, paired [95% CI]", "evaluations", "forward-equivalents",
            "seconds"]
    if q5["has_true"]:
        head += ["reward", "vs prefix, paired [95% CI]", "Wilcoxon p", "vs random prompts [95% CI]",
                 "exploitation gap [95% CI]"]
    rows = []
    for s in q5["strategies"]:
        pp = s["probe_vs_prefix"]
        row = [s["strategy"], fmt(s["mean_probe_score"]), f"{fmt_signed(pp['diff'])} {ci(pp['ci_lo'], pp['ci_hi'], True)}",
               fmt(s["evaluations"]), fmt(s.get("forwards")), fmt(s["seconds"])]
        if q5["has_true"]:
            tp, tr = s["true_vs_prefix"], s["true_vs_random"]
            row += [fmt(tp["mean_post"]), f"{fmt_signed(tp['diff'])} {ci(tp['ci_lo'], tp['ci_hi'], True)}",
                    fmt_p(tp["p_value"]), f"{fmt_signed(tr['diff'])} {ci(tr['ci_lo'], tr['ci_hi'], True)}"]
            gap = s.get("exploitation_gap")
            row.append(f"{fmt_signed(gap['mean'])} {ci(gap['ci_lo'], gap['ci_hi'], True)}" if gap else "n/a")
        rows.append(row)
    t["Q5"] = (head, rows)
    if r.get("Q6"):
        t["Q6"] = _q6_table(r["Q6"])
    return t


def _q1_table(q1: dict) -> tuple[list[str], list[list[str]]]:
    """The baselines on the test pairs first, then every cell with its accuracy beside each baseline's (McNemar p
    of the probe against it); user_end cells show r with the expected reward and the prompt's bag of words."""
    head = ["layer", "position", "objective", "test acc [95% CI] (user_end: r)", "vs truth", "minimal pairs",
            "bag of words (p)", "probe − bag of words", "DPO reward (p)", "log-prob (p)", "length acc", "shuffled acc"]
    rows = [["baseline", name_, "—", f"{fmt(s['acc'])} {ci(s['acc_lo'], s['acc_hi'])}", fmt(s["truth_acc"]),
             fmt(s["minimal_acc"]), "—", "—", "—", "—", "—", "—"]
            for name_, s in ((q1["baseline_labels"].get(k, k), v) for k, v in q1["baselines"].items())]
    for g in q1["grid"]:
        where = f"`{g['position']}`" + (" (token embeddings)" if g["embedding"] else "")
        if g["position"] == "user_end":
            rows.append([fmt(g["layer"]), where, f"{g['objective']} (expected reward)",
                         f"r {fmt(g['test_r'])} {ci(g['test_r_lo'], g['test_r_hi'])}", "—", "—",
                         f"r {fmt(g['prompt_bow_r'])} (prompt)",
                         f"{fmt_signed(g['r_minus_prompt_bow'])} {ci(g['r_minus_prompt_bow_lo'], g['r_minus_prompt_bow_hi'], True)}",
                         "—", "—", "—", "—"])
            continue
        pv = lambda acc, p: "n/a" if acc is None else f"{fmt(acc)} ({fmt_p(p)})"  # noqa: E731
        rows.append([fmt(g["layer"]), where, g["objective"],
                     f"{fmt(g['test_pairwise_acc'])} {ci(g['test_pairwise_acc_lo'], g['test_pairwise_acc_hi'])}",
                     fmt(g["test_truth_acc"]), fmt(g["test_minimal_acc"]), pv(g["text_acc"], g["p_vs_text"]),
                     fmt_signed(g["probe_minus_text"]), pv(g["dpo_acc"], g["p_vs_dpo"]),
                     pv(g["logprob_acc"], g["p_vs_logprob"]), fmt(g["length_pairwise_acc"]),
                     fmt(g["shuffled_pairwise_acc"])])
    return head, rows


def _q6_table(q6: dict) -> tuple[list[str], list[list[str]]]:
    """Each causal effect beside its null: steering slopes per unit α (probe direction vs random directions and vs
    the shuffled-label probe), then the patching effects on the DPO margin per direction × layer × position."""
    head = ["effect", "where", "effect [95% CI]", "null", "null [95% CI]", "effect − null [95% CI]"]
    cell = lambda s: f"{fmt_signed(s['mean'])} {ci(s['lo'], s['hi'], True)}"  # noqa: E731
    rows = []
    for metric, s in q6["slopes"].items():
        for null, name in (("random", "random directions"), ("shuffled", "shuffled-label probe")):
            if "probe" in s and null in s:
                rows.append([f"steering slope: {metric}", f"`{q6['hook']}`", cell(s["probe"]), name, cell(s[null]),
                             cell(s[f"probe_minus_{null}"])])
    for r in (q6.get("patching") or {}).get("rows", []):
        rows.append([f"patching {r['direction'].replace('_to_', '→')}: Δ DPO margin",
                     f"layer {fmt(r['layer'])} `{r['position']}`", cell(r["delta"]), "another pair's activation",
                     cell(r["delta_null"]), cell(r["delta_minus_null"])])
    return head, rows


FIGURES_OF = {"Q1": ["heatmap"], "Q2": ["distributions", "probe_vs_truth"], "Q3": ["source"], "Q4": ["direction"],
              "Q5": ["search"], "Q6": ["steering", "patching"]}


def _subject_line(r: dict) -> str:
    s = r["subjects"]
    who = "the embedded model organism" if s.get("organism") else "the configured models"
    rater = "its known rater" if s.get("rater") else "no known rater"
    return (f"Subjects: {who}, pre-RL `{s['pre']}`, post-RL `{s['post']}`, data `{s['dataset']}`, with {rater}. "
            f"Wall time {fmt(r['seconds'])} s" + (f" (reused stages: {', '.join(r['reused_stages'])})."
                                                   if r["reused_stages"] else "."))


def render_markdown(r: dict) -> str:
    tables = _tables(r)
    lines = [f"# {r['title']}", "", _subject_line(r), "", "## Answers", ""]
    for a in r["answers"]:
        lines += [f"**{a['id']}. {a['question']}**", "", a["answer"], ""]
    for a in r["answers"]:
        lines += [f"## {a['id']}: details", "", _md_table(*tables[a["id"]]), ""]
        for f in FIGURES_OF[a["id"]]:
            if f in r["figures"]:
                lines += [f"![{f}]({r['figures'][f]})", ""]
    lines += ["Statistics: the prompt is the unit (each model's completions averaged per prompt; search: each prefix "
              "one observation); CIs are percentile bootstrap 95% intervals resampling prompts; p-values are "
              "two-sided Wilcoxon signed-rank tests (against random prompts: Mann–Whitney U). "
              "Every number here is in `report.json`.", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Markdown's `code` and **bold** → HTML, escaping everything else."""
    import re

    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            esc = html.escape(part)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc))
    return "".join(out)


def render_html(r: dict, out: Path) -> str:
    tables = _tables(r)
    css = ("body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;line-height:1.45;"
           "color:#222}table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ccc;"
           "padding:.25em .5em;text-align:left}th{background:#f3f3f3}code{background:#f4f4f4;padding:0 .2em}"
           ".answer{border-left:4px solid #4C72B0;padding:.3em .8em;margin:.6em 0;background:#f8f9fc}"
           ".verdict{font-weight:bold;text-transform:uppercase;font-size:.8em;color:#4C72B0}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(r['title'])}</title>"
             f"<style>{css}</style></head><body>", f"<h1>{html.escape(r['title'])}</h1>",
             f"<p>{_inline_html(_subject_line(r))}</p>", "<h2>Answers</h2>"]
    for a in r["answers"]:
        parts.append(f"<div class='answer'><p><b>{a['id']}. {html.escape(a['question'])}</b> "
                     f"<span class='verdict'>{html.escape(a['verdict'])}</span></p><p>{_inline_html(a['answer'])}</p></div>")
    for a in r["answers"]:
        head, rows = tables[a["id"]]
        parts.append(f"<h2>{a['id']}: details</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                                         for row in rows) + "</table>")
        for f in FIGURES_OF[a["id"]]:
            if f in r["figures"]:
                data = base64.b64encode((Path(out) / r["figures"][f]).read_bytes()).decode()
                parts.append(f"<p><img alt='{f}' src='data:image/png;base64,{data}'></p>")
    parts.append("<p><small>Statistics: the prompt is the unit; CIs are percentile bootstrap 95% intervals resampling "
                 "prompts; p-values are two-sided Wilcoxon signed-rank tests (against random prompts: Mann–Whitney U). "
                 "Every number here is in "
                 "<code>report.json</code>.</small></p></body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, report: dict) -> None:
    """report.json, report.md and report.html under `out`, each written atomically."""
    out = Path(out)
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    write_text(out / "report.html", render_html(report, out))
