"""Rendering a report dict as report.md and a self-contained report.html (figures embedded as base64 PNGs).
Text from the data (prompts, completions, paths) appears in code spans."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from rsearch.io_utils import write_json, write_text
from rsearch.report.numbers import code, fmt
from rsearch.study.stage import Stage, Table, report_stages


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _sections(r: dict) -> list[tuple[dict, Table, list[str]]]:
    """Each answer with its stage's table and the names of its figures, in the report's order."""
    by_id: dict[str, Stage] = {s.report_id: s for s in report_stages(r) if s.report_id}
    return [(a, by_id[a["id"]].table(r[a["id"]]), list(by_id[a["id"]].figures)) for a in r["answers"]]


def _subject_line(r: dict) -> str:
    s = r["subjects"]
    who = "the embedded model organism" if s.get("organism") else "the configured models"
    rater = "its known rater" if s.get("rater") else "no known rater"
    return (f"Subjects: {who}, pre-RL {code(s['pre'])}, post-RL {code(s['post'])}, data {code(s['dataset'])}, with "
            f"{rater}. "
            f"Wall time {fmt(r['seconds'])} s" + (f" (reused stages: {', '.join(r['reused_stages'])})."
                                                   if r["reused_stages"] else "."))


GLANCE_HEADER = ["question", "verdict", "headline [95% CI]", "beside its strongest null", "power or control"]


def _glance_rows(r: dict) -> list[list[str]]:
    """The first screen: each question's verdict, headline number, strongest null and power or control."""
    return [[a["id"], a["verdict"], *a.get("glance", ["—", "—", "—"])] for a in r["answers"]]


def render_markdown(r: dict) -> str:
    glance = [[c.replace("|", "\\|") for c in row] for row in _glance_rows(r)]  # a cell's | would split it
    lines = [f"# {r['title']}", "", _subject_line(r), "", "## At a glance", "", _md_table(GLANCE_HEADER, glance), "",
             "## Answers", ""]
    for a in r["answers"]:
        lines += [f"**{a['id']}. {a['question']}**", "", a["answer"], ""]
    for a, table, figures in _sections(r):
        lines += [f"## {a['id']}: details", "", _md_table(*table), ""]
        for f in figures:
            if f in r["figures"]:
                lines += [f"![{f}]({r['figures'][f]})", ""]
    lines += ["Statistics: the prompt is the unit (each model's completions averaged per prompt; search: each prefix "
              "one observation); CIs are percentile bootstrap 95% intervals resampling prompts; p-values are "
              "two-sided Wilcoxon signed-rank tests (against random prompts: Mann–Whitney U). "
              "Every number here is in `report.json`.", ""]
    return "\n".join(lines)


# a code span: a run of n backticks to the next run of exactly n (see rsearch.report.numbers.code)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _inline_html(text: str) -> str:
    """Markdown's `code` and **bold** → HTML, escaping everything else."""
    def plain(part: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(part))

    out, pos = [], 0
    for m in CODE_SPAN.finditer(text):
        inner = m.group(2)
        if len(m.group(1)) > 1 and inner.startswith(" ") and inner.endswith(" "):
            inner = inner[1:-1]
        out += [plain(text[pos:m.start()]), f"<code>{html.escape(inner)}</code>"]
        pos = m.end()
    return "".join(out + [plain(text[pos:])])


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def render_html(r: dict, out: Path) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;line-height:1.45;"
           "color:#222}table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ccc;"
           "padding:.25em .5em;text-align:left}th{background:#f3f3f3}code{background:#f4f4f4;padding:0 .2em}"
           ".answer{border-left:4px solid #4C72B0;padding:.3em .8em;margin:.6em 0;background:#f8f9fc}"
           ".verdict{font-weight:bold;text-transform:uppercase;font-size:.8em;color:#4C72B0}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(r['title'])}</title>"
             f"<style>{css}</style></head><body>", f"<h1>{html.escape(r['title'])}</h1>",
             f"<p>{_inline_html(_subject_line(r))}</p>", "<h2>At a glance</h2>", _html_table(GLANCE_HEADER,
                                                                                             _glance_rows(r)),
             "<h2>Answers</h2>"]
    for a in r["answers"]:
        parts.append(f"<div class='answer'><p><b>{a['id']}. {html.escape(a['question'])}</b> "
                     f"<span class='verdict'>{html.escape(a['verdict'])}</span></p><p>{_inline_html(a['answer'])}</p></div>")
    for a, (head, rows), figures in _sections(r):
        parts.append(f"<h2>{a['id']}: details</h2>" + _html_table(head, rows))
        for f in figures:
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
