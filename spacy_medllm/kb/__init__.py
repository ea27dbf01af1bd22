"""Knowledge base: concepts, builders for MeSH / MEDIC / UMLS / scispaCy / mentions, candidates."""
from .builders import build_kb, read_medic, read_mentions, read_mesh, read_scispacy_kb, read_umls_rrf
from .candidates import CandidateGenerator
from .knowledge_base import Concept, KnowledgeBase

__all__ = [
    "Concept", "KnowledgeBase", "CandidateGenerator", "build_kb", "read_mesh", "read_medic",
    "read_umls_rrf", "read_scispacy_kb", "read_mentions",
]
