"""spacy_medllm: clinical and biomedical NLP components for spaCy.

Kept light: importing the package (which spaCy does through entry points, e.g. for the
tokenizer of a CNN pipeline) does not import torch or transformers.
"""
from .about import __version__
from .corpus.base import ReadStats
from .tokens import NIL, split_kb_id

__all__ = ["__version__", "NIL", "ReadStats", "split_kb_id", "resolve_encoder"]


def __getattr__(name: str):
    if name == "resolve_encoder":
        from .layers.encoder import resolve_encoder

        return resolve_encoder
    raise AttributeError(f"module 'spacy_medllm' has no attribute {name!r}")
