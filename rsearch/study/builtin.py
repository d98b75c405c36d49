"""The study's built-in stages, registered in the order the demo runs them (the order of these imports)."""
# isort: off
from rsearch.study import probes, compare, source, direction, search, causal  # noqa: F401  (register themselves)
