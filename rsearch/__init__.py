"""rsearch: probes for the reward a language model learned to seek, and search for what they rate high."""
from rsearch.errors import RsearchError

__version__ = "0.1.0"

__all__ = ["RsearchError", "__version__"]
