"""Atomic writes keep the usual file mode; data in the report's code spans stays inside them."""
from __future__ import annotations

import os
import stat

from rsearch.io_utils import write_text
from rsearch.report.numbers import code
from rsearch.report.render import _inline_html


def test_an_atomic_write_has_the_mode_a_plain_open_gives(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # not mkstemp's 0600
    finally:
        os.umask(umask)


def test_a_backtick_in_the_data_cannot_end_its_code_span():
    span = code("3 ` <img src=x onerror=alert(1)>")
    assert span.startswith("`` ") and span.endswith(" ``")
    out = _inline_html(f"found {span} and `plain`")
    assert out == "found <code>3 ` &lt;img src=x onerror=alert(1)&gt;</code> and <code>plain</code>"
