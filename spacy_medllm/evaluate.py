"""NER accuracy, speed and memory: kept importable here for `medllm evaluate` and older
code; the implementation is `spacy_medllm.evaluation.ner`."""
from .evaluation.metrics import peak_rss_mb
from .evaluation.ner import evaluate_ner, markdown_table, run_isolated

__all__ = ["evaluate_ner", "run_isolated", "markdown_table", "peak_rss_mb"]
