"""The `medllm_linker` component."""
from .model import LinkerBatch, build_linker_model
from .pipe import MedLinker, make_linker
from .scorer import make_linker_scorer, score_links

__all__ = ["MedLinker", "make_linker", "build_linker_model", "LinkerBatch", "score_links", "make_linker_scorer"]
