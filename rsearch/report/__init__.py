"""The study's report: report.json (every number), report.md and a self-contained report.html.

`build_report` (verdicts.py) gathers the stages' typed results into one JSON-able dict and derives, for each
research question, a verdict by whether a CI excludes chance; `answers` (answers.py) words each answer by its
verdict; every number the text states is formatted from a value stored in that dict (numbers.py), so report.md
and report.html (render.py) never say anything report.json does not hold.
"""
from rsearch.report.answers import QUESTIONS, answers
from rsearch.report.render import render_html, render_markdown, write_report
from rsearch.report.verdicts import build_report, verdict

__all__ = ["QUESTIONS", "answers", "build_report", "render_html", "render_markdown", "verdict", "write_report"]
