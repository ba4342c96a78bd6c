"""xlfast: cross-lingual word embeddings, word alignment and bitext mining for low-resource languages."""

__version__ = "0.1.0"
