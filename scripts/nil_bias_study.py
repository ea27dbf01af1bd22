"""The NIL trade-off of a trained `medllm_linker`: its `nil_bias` against gold-mention
accuracy and end-to-end (span, label, id) precision, recall and F1 on each dev set.

The linker runs once per set (gold mentions, then the pipeline's own NER spans); each bias
is applied to the saved scores, as `set_annotations` applies it. acc@1 counts NIL as wrong
(gold NIL excluded); end to end, a NIL answer is no prediction.

    python scripts/nil_bias_study.py training/linker_dense/model-best \
        corpus/bc5cdr/dev.spacy corpus/ncbi_disease/dev.spacy
"""
import numpy as np, spacy, sys
from spacy.tokens import DocBin
import spacy_medllm
from spacy_medllm.kb import ids_match
from spacy_medllm.tokens import split_kb_id
from spacy_medllm.evaluation.candidates import NCBI_DISEASE_LABELS
nlp = spacy.load(sys.argv[1])
linker = nlp.get_pipe("medllm_linker"); kb = linker.kb
biases = [1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -100.0]
def run(docs):
    out = []
    for i in range(0, len(docs), 32):
        b = docs[i:i+32]
        mentions, cands, logits = linker.predict(b)
        j = 0
        for doc, ms in zip(b, mentions):
            for ent, _, _ in ms:
                out.append((doc, ent, cands[j], logits[j])); j += 1
    return out
def choose(cs, row, bias):
    r = row.copy(); r[0] += bias
    s = int(r.argmax())
    return cs[s-1][0] if s > 0 else "NIL"
for path in sys.argv[2:]:
    gold = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    # gold mentions
    docs, golds = [], []
    for g in gold:
        d = nlp.make_doc(g.text); ents=[]; ids=[]
        for e in g.ents:
            gid = split_kb_id(e.kb_id_)
            sp = d.char_span(e.start_char, e.end_char, label=NCBI_DISEASE_LABELS.get(e.label_, e.label_))
            if gid and sp is not None: ents.append(sp); ids.append(gid)
        d.ents = ents; docs.append(d); golds.append(ids)
    res = run(docs)
    flat_gold = [g for ids in golds for g in ids]
    line = []
    for b in biases:
        acc = np.mean([ids_match(kb, choose(cs, row, b), g) for (_, _, cs, row), g in zip(res, flat_gold)])
        line.append(f"{b}:{100*acc:.2f}")
    print(path, "gold acc@1", " ".join(line))
    # end to end on predicted spans
    with nlp.select_pipes(disable=["medllm_linker"]):
        pred = list(nlp.pipe([g.text for g in gold], batch_size=32))
    res = run(pred)
    line = []
    for b in biases:
        predicted = {}
        for doc, ent, cs, row in res:
            cid = choose(cs, row, b)
            if cid != "NIL": predicted[(id(doc), ent.start_char, ent.end_char, ent.label_)] = cid
        tp = 0; ng = 0
        for doc, g in zip(pred, gold):
            for e in g.ents:
                gid = split_kb_id(e.kb_id_)
                if not gid: continue
                ng += 1
                cid = predicted.get((id(doc), e.start_char, e.end_char, NCBI_DISEASE_LABELS.get(e.label_, e.label_)))
                tp += int(cid is not None and ids_match(kb, cid, gid))
        p = tp / max(len(predicted), 1); r = tp / ng; f = 2*p*r/(p+r)
        line.append(f"{b}:P{100*p:.1f}/R{100*r:.1f}/F{100*f:.2f}")
    print(path, "e2e", " ".join(line))
