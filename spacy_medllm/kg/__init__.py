"""Knowledge graph over KB concept ids, PyKEEN embeddings, and the embedding table they export."""
from .build import KnowledgeGraph, build_kg, read_triples, write_triples
from .embeddings import EmbeddingTable

__all__ = ["KnowledgeGraph", "build_kg", "read_triples", "write_triples", "EmbeddingTable", "train_kg", "umls_benchmark"]


def __getattr__(name: str):
    # training imports pykeen (slow, and it reads PYKEEN_HOME at import): load it on first use
    if name in ("train_kg", "umls_benchmark", "set_pykeen_home"):
        from . import train

        return getattr(train, name)
    raise AttributeError(name)
