"""spacy_medllm: clinical and biomedical NLP components for spaCy."""
from .about import __version__
from .corpus.base import NIL, ReadStats, split_kb_id
from .layers.encoder import resolve_encoder

__all__ = ["__version__", "NIL", "ReadStats", "split_kb_id", "resolve_encoder"]
