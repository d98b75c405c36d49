"""The study's report: report.json (every number), report.md and a self-contained report.html.

`build.build_report` gathers each stage's section (its numbers and verdicts, `rsearch.study.stage.Stage.numbers`)
into one JSON-able dict and words each answer by its verdict (`Stage.answer`); every number the text states is
formatted from a value stored in that dict (numbers.py), so report.md and report.html (render.py) never say
anything report.json does not hold. (Nothing is imported here: the stages import numbers.py and verdicts.py,
and render.py imports the stages.)
"""
