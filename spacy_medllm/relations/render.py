"""HTML rendering of entities (with linked concepts) and relations: `spacy_medllm.visualize`
(kept importable from here: `from spacy_medllm.relations import render`)."""
from ..visualize import COLORS, render, render_records

__all__ = ["COLORS", "render", "render_records"]
