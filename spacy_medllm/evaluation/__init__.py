"""Evaluation and tuning of every component, behind `medllm` commands.

- `metrics`: P/R/F with a per-label breakdown, recall@k, per-component timing, memory;
- `ner`: NER accuracy, speed and memory (`medllm evaluate`);
- `candidates`: recall@k of the KB's candidate generator (`medllm evaluate-candidates`);
- `linker`: medllm_linker on gold mentions and end to end (`medllm evaluate-linker`);
- `relations`: medllm_rel at concept and mention level (`medllm evaluate-relations`);
- `peer`: scispaCy's candidate generator on the same KB and mentions;
- `tuning`: relation thresholds tuned on dev, written to a new pipeline (`medllm tune-thresholds`).

The submodules load what they need when imported; this package imports only the shared
measures.
"""
from .metrics import (
    KS, ComponentTimes, HitCounts, PRFCounts, first_hit, peak_rss_mb, prf, recall_at_k, time_components, write_report,
)

__all__ = [
    "KS", "prf", "PRFCounts", "first_hit", "recall_at_k", "HitCounts", "ComponentTimes", "time_components",
    "peak_rss_mb", "write_report",
]
