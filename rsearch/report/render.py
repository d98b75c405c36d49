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
    t["Q1"] = (["layer", "position", "objective", "test pairwise acc [95% CI]", "test Pearson r", "length acc",
                "shuffled acc"],
               [[fmt(g["layer"]), f"`{g['position']}`", g["objective"],
                 f"{fmt(g['test_pairwise_acc'])} {ci(g['test_pairwise_acc_lo'], g['test_pairwise_acc_hi'])}",
                 fmt(g["test_pearson"]), fmt(g["length_pairwise_acc"]), fmt(g["shuffled_pairwise_acc"])]
                for g in q1["grid"]])
    t["Q2"] = (["per completion", "pre", "post", "post − pre [95% CI]", "Wilcoxon p"],
               [[name, fmt(s["mean_pre"]), fmt(s["mean_post"]), f"{fmt_signed(s['diff'])} "
                 f"{ci(s['ci_lo'], s['ci_hi'], True)}", fmt_p(s["p_value"])]
                for name, s in ((n, q2["metrics"].get(n)) for n in ("probe_score", "dpo_reward", "length", "true_reward"))
                if s])
    t["Q3"] = (["layer", "position", "test accuracy [95% CI]", "AUROC"],
               [[fmt(x["layer"]), f"`{x['position']}`", f"{fmt(x['accuracy'])} {ci(x['accuracy_lo'], x['accuracy_hi'])}",
                 fmt(x.get("auroc"))] for x in q3["rows"]])
    t["Q4"] = (["layer", "cos(update, probe)", "random |cos| 95th pct", "same, corrected for layers",
                "probe score shift [95% CI]", "update norm / activation norm"],
               [[fmt(x["layer"]), fmt_signed(x["cos"]), fmt(x["random_abs_cos_p95"]), fmt(x["random_abs_cos_family95"]),
                 f"{fmt_signed(x['probe_shift'])} {ci(x['probe_shift_lo'], x['probe_shift_hi'], True)}",
                 fmt(x["update_rel_norm"])] for x in q4["rows"]])
    head = ["strategy", "mean probe score", "evaluations", "seconds"]
    if q5["has_true"]:
        head += ["true reward", "vs prefix [95% CI]", "vs random prompts [95% CI]"]
    rows = []
    for s in q5["strategies"]:
        row = [s["strategy"], fmt(s["mean_probe_score"]), fmt(s["evaluations"]), fmt(s["seconds"])]
        if q5["has_true"]:
            tp, tr = s["true_vs_prefix"], s["true_vs_random"]
            row += [fmt(tp["mean_a"]), f"{fmt_signed(tp['diff'])} {ci(tp['ci_lo'], tp['ci_hi'], True)}",
                    f"{fmt_signed(tr['diff'])} {ci(tr['ci_lo'], tr['ci_hi'], True)}"]
        rows.append(row)
    t["Q5"] = (head, rows)
    return t


FIGURES_OF = {"Q1": ["heatmap"], "Q2": ["distributions", "probe_vs_truth"], "Q3": ["source"], "Q4": ["direction"],
              "Q5": ["search"]}


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
    lines += ["Statistics: paired over prompts (each model's completions averaged per prompt); CIs are percentile "
              "bootstrap 95% intervals; p-values are two-sided Wilcoxon signed-rank tests (search: Mann–Whitney U). "
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
    parts.append("<p><small>Statistics: paired over prompts; CIs are percentile bootstrap 95% intervals; p-values are "
                 "two-sided Wilcoxon signed-rank tests (search: Mann–Whitney U). Every number here is in "
                 "<code>report.json</code>.</small></p></body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, report: dict) -> None:
    """report.json, report.md and report.html under `out`, each written atomically."""
    out = Path(out)
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    write_text(out / "report.html", render_html(report, out))
