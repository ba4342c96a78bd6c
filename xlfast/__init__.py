"""xlfast: cross-lingual word embeddings, word alignment and bitext mining for low-resource languages."""

__version__ = "0.1.0"

# Thread-pool settings that the runtimes (Numba, OpenMP) read once when they load: set here, before any
# of them is imported, and only where the user's environment does not already decide (xlfast.threads).
from xlfast.threads import apply_env_defaults as _apply_env_defaults

_apply_env_defaults()
