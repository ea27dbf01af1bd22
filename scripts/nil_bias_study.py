"""The NIL trade-off of a trained `medllm_linker`: its `nil_bias` against gold-mention
accuracy and end-to-end (span, label, id) precision, recall and F1 on each dev set.

Scored as `medllm evaluate-linker` scores (`link_gold_mentions`, `end_to_end_links`): acc@1
counts NIL as wrong (gold NIL excluded); end to end, a NIL answer is no prediction. The
pipeline's NER runs once per set; the linker runs again for each bias (its caches keep the
candidates and features, so only the choice of answer is redone). Printed overall and per
entity label: a bias moves only the mentions of the label it is set for, so a per-label
setting (`nil_bias = {"Chemical": 2.0, "Disease": 0.0}`) is read off the per-label lines.

    python scripts/nil_bias_study.py training/linker_dense/model-best \\
        corpus/bc5cdr/dev.spacy corpus/ncbi_disease/dev.spacy
"""
import sys

import spacy
from spacy.tokens import DocBin

import spacy_medllm  # noqa: F401  (registers the factories)
from spacy_medllm.evaluation.linker import end_to_end_links, link_gold_mentions, linker_name

BIASES = [8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -100.0]


def main(model: str, *paths: str) -> None:
    nlp = spacy.load(model)
    name = linker_name(nlp, model)
    linker = nlp.get_pipe(name)
    saved = linker.cfg["nil_bias"]
    for path in paths:
        gold = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        with nlp.select_pipes(disable=[name]):
            ner_docs = list(nlp.pipe([g.text for g in gold], batch_size=32))
        accuracy, e2e = {}, {}
        for bias in BIASES:
            linker.cfg["nil_bias"] = bias
            hits, _, _ = link_gold_mentions(nlp, name, gold)
            for label, s in hits.scores().items():
                accuracy.setdefault(label, []).append(f"{bias}:{s['acc@1']:.2f}")
            linked = list(linker.pipe([d.copy() for d in ner_docs], batch_size=32))
            scored = end_to_end_links(linked, gold, linker.kb)
            for label, s in [("overall", scored["overall"]), *scored["per_label"].items()]:
                e2e.setdefault(label, []).append(f"{bias}:P{s['p']:.1f}/R{s['r']:.1f}/F{s['f']:.2f}")
        linker.cfg["nil_bias"] = saved
        for label in sorted(accuracy, key=lambda x: (x != "overall", x)):
            print(path, label, "gold acc@1", " ".join(accuracy[label]))
        for label in sorted(e2e, key=lambda x: (x != "overall", x)):
            print(path, label, "e2e", " ".join(e2e[label]))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
