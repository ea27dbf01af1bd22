"""The `medllm_linker` component."""
from .features import CandidateContext, LinkerFeatures, make_linker_features
from .model import LinkerBatch, build_linker_model
from .pipe import MedLinker, make_linker
from .scorer import make_linker_scorer, score_links

__all__ = ["MedLinker", "make_linker", "build_linker_model", "LinkerBatch", "score_links", "make_linker_scorer",
           "LinkerFeatures", "CandidateContext", "make_linker_features"]
