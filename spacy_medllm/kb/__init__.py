"""Knowledge base: concepts, builders for MeSH / MEDIC / UMLS / scispaCy / drug vocabularies / mentions, candidates."""
from .builders import (
    SOURCES, build_kb, read_drugcentral, read_medic, read_mentions, read_mesh, read_mesh_actions, read_mesh_thesaurus,
    read_mesh_supplementary, read_pharmgkb, read_scispacy_kb, read_umls_rrf,
)
from .candidates import CandidateGenerator
from .ids import ids_match
from .knowledge_base import Concept, KnowledgeBase

__all__ = [
    "Concept", "KnowledgeBase", "CandidateGenerator", "build_kb", "read_mesh", "read_medic",
    "read_umls_rrf", "read_scispacy_kb", "read_mentions", "read_mesh_thesaurus", "read_mesh_actions",
    "read_mesh_supplementary", "read_drugcentral", "read_pharmgkb", "SOURCES", "ids_match",
]
