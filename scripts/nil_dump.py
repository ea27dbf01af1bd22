"""Dump a trained `medllm_linker`'s raw scores on gold mentions and on the pipeline's own
entity spans, so that NIL rules (a bias on the NIL slot's logit, a probability threshold,
...) can be compared offline without running the pipeline again.

One JSON line per linked mention: the setting ("gold": the gold entities given; "e2e": the
NER's spans), the entity label, the logits (slot 0 NIL, then the candidates in order),
whether each candidate is a right answer, and, for "e2e", whether the span and label match
a gold entity with an id. A header line per data set counts the gold entities with an id
per label (the end-to-end recall denominator). Scored as `medllm evaluate-linker` scores.

    python scripts/nil_dump.py training/linker_dense/model-best metrics/nil_dump_s0.jsonl \\
        bc5cdr-dev=corpus/bc5cdr/dev.spacy
"""
import sys
from collections import Counter

import spacy
import srsly
from spacy.tokens import DocBin

import spacy_medllm  # noqa: F401  (registers the factories)
from spacy_medllm.evaluation.candidates import NCBI_DISEASE_LABELS
from spacy_medllm.evaluation.linker import linker_name
from spacy_medllm.kb import ids_match
from spacy_medllm.tokens import split_kb_id


def rows(linker, docs, setting, gold_of):
    """One dict per linked mention of `docs` (gold_of(doc index, ent) -> gold ids or None)."""
    out = []
    for start in range(0, len(docs), 32):
        batch = docs[start : start + 32]
        mentions, cands, logits = linker.predict(batch)
        j = 0
        for i, doc_mentions in enumerate(mentions):
            for ent, _, _ in doc_mentions:
                cs = cands[j]
                gids = gold_of(start + i, ent)
                right = [bool(gids) and ids_match(linker.kb, cid, gids) for cid, _ in cs]
                out.append({
                    "set": setting, "label": ent.label_, "text": ent.text,
                    "logits": [round(float(x), 4) for x in logits[j][: len(cs) + 1]],
                    "right": right, "gold_span": gids is not None,
                })
                j += 1
    return out


def main(model: str, output: str, *datasets: str) -> None:
    nlp = spacy.load(model)
    name = linker_name(nlp, model)
    linker = nlp.get_pipe(name)
    lines = []
    for spec in datasets:
        dname, path = spec.split("=", 1)
        gold = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        gold_ents = []
        counts: Counter = Counter()
        given = []
        for g in gold:
            doc = nlp.make_doc(g.text)
            ents, table = [], {}
            for e in g.ents:
                gids = set(split_kb_id(e.kb_id_))
                if not gids:
                    continue
                label = NCBI_DISEASE_LABELS.get(e.label_, e.label_)
                counts[label] += 1
                table[(e.start_char, e.end_char, label)] = gids
                span = doc.char_span(e.start_char, e.end_char, label=label)
                if span is not None:
                    ents.append(span)
            doc.ents = ents
            given.append(doc)
            gold_ents.append(table)
        lookup = lambda i, ent: gold_ents[i].get((ent.start_char, ent.end_char, ent.label_))  # noqa: E731
        # the gold mentions go to the linker alone (its features-only scorer reads the text
        # and the entities); end to end, the pipeline up to the linker writes the entities
        with nlp.select_pipes(disable=[name]):
            ner_docs = list(nlp.pipe([g.text for g in gold], batch_size=32))
        lines.append({"dataset": dname, "gold_counts": dict(counts)})
        for r in rows(linker, given, "gold", lookup) + rows(linker, ner_docs, "e2e", lookup):
            r["dataset"] = dname
            lines.append(r)
        print(dname, len(lines), file=sys.stderr)
    srsly.write_jsonl(output, lines)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
