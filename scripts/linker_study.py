"""Compare linker feature sets on the dev sets' gold mentions, fast.

The features-only `medllm_linker` (LinkerModel.v2 without tok2vec) reads nothing the
transformer or the NER make, so it can be trained and scored on gold mentions alone,
in a blank pipeline with the biomedical tokenizer: the same component, data and
optimizer as `spacy train configs/linker_dense.cfg`, without running the frozen
encoder. Each feature set is trained with the same seed and steps and scored on the
gold mentions of each dev set (acc@1, recall@k per label); the errors of each are
written beside the table.

    python scripts/linker_study.py corpus/kb_dense --train corpus/linker_train \
        --dev bc5cdr-dev=corpus/bc5cdr/dev.spacy --dev ncbi-dev=corpus/ncbi_disease/dev.spacy \
        --features base=score,exact,... --features more=...,word_overlap --output metrics/linker_study

`--heads N` trains the scorer as an ensemble of N feature MLPs (LinkerModel.v2's `n_heads`);
`--nil-bias B` (repeatable) also scores the dev sets with the NIL slot shifted by B.

`--context-from PIPELINE` adds mention context to the scorer (LinkerModel.v2 with tok2vec:
the mention's pooled token vectors against a hashed concept table, configs/multitask.cfg's
linker) from that pipeline's transformer, frozen as in configs/linker_dense.cfg: its token
vectors (through its linker's listener, else its NER's) are computed once per text and kept.
"""
import random
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy
import spacy
import srsly
import typer
from spacy.training import Corpus
from spacy.util import minibatch
from thinc.api import Adam, Model, fix_random_seed
from tqdm import tqdm

import spacy_medllm  # noqa: F401  (registers the factories)
from spacy_medllm.evaluation.candidates import NCBI_DISEASE_LABELS
from spacy_medllm.evaluation.linker import link_gold_mentions
from spacy_medllm.linker.model import build_linker_model_v2
from spacy_medllm.tokens import split_kb_id

DENSE_FEATURES = "score,exact,rank,type_match,type_conflict,prior,alias_count,concept_count,expanded,score_gap,nil,canonical_name,tfidf,dense,dense_gap"


def build(features: List[str], seed: int, width: int, context: Optional[Model] = None, abbreviation_mentions: bool = False, heads: int = 1):
    fix_random_seed(seed)
    nlp = spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": "spacy_medllm.BiomedicalTokenizer.v1"}}})
    nlp.add_pipe("medllm_linker", config={
        "top_k": 30, "threshold": None, "use_abbreviations": True, "abbreviation_mentions": abbreviation_mentions,
        "features": {"@misc": "spacy_medllm.linker_features.v1", "features": features},
        "model": {"@architectures": "spacy_medllm.LinkerModel.v2", "tok2vec": None, "n_features": len(features), "hidden_width": width, "n_concept_rows": 65536, "n_heads": heads},
    })
    if context is not None:
        nlp.get_pipe("medllm_linker").model = build_linker_model_v2(context, len(features), width, 65536, heads)
    return nlp


def frozen_context(pipeline: Path) -> Model:
    """A tok2vec that returns `pipeline`'s frozen transformer's token vectors for each
    text, computed the first time the text is seen and kept: what its linker's (else its
    NER's) listener reads."""
    base = spacy.load(pipeline)
    trf = base.get_pipe("transformer")
    owner = "medllm_linker" if "medllm_linker" in base.pipe_names else "ner"
    listener = base.get_pipe(owner).model.get_ref("tok2vec")
    vectors: Dict[str, numpy.ndarray] = {}

    def forward(model, docs, is_train):
        new = list(dict.fromkeys(doc.text for doc in docs if doc.text not in vectors))
        if new:
            encoded = list(trf.pipe([base.make_doc(t) for t in new], batch_size=16))
            for text, v in zip(new, listener.predict(encoded)):
                vectors[text] = numpy.asarray(v, dtype="float32")
        out = [vectors[doc.text] for doc in docs]
        for doc, v in zip(docs, out):
            if v.shape[0] != len(doc):
                raise ValueError(f"{pipeline}: its tokenizer gives {v.shape[0]} tokens where the study's gives {len(doc)}: {doc.text[:60]!r}")
        return out, lambda d_vectors: docs

    return Model("frozen_context", forward, dims={"nO": int(listener.get_dim("nO"))})


def main(
    kb: Path = typer.Argument(..., help="KB folder with its index (dense or not)"),
    train: List[Path] = typer.Option(..., help=".spacy file or folder of them (repeatable)"),
    dev: List[str] = typer.Option(..., help="NAME=PATH of a dev .spacy file (repeatable)"),
    features: List[str] = typer.Option([f"dense={DENSE_FEATURES}"], help="NAME=f1,f2,... (repeatable); a name alone adds to the first set"),
    steps: int = typer.Option(2000, help="updates (as configs/linker_dense.cfg)"),
    batch_docs: int = typer.Option(8, help="documents per update"),
    learn_rate: float = typer.Option(0.005),
    width: int = typer.Option(64, help="hidden width of the scorer"),
    heads: int = typer.Option(1, help="the scorer's n_heads: feature MLPs trained side by side, averaged in prediction"),
    seed: int = typer.Option(0),
    train_kb: Optional[Path] = typer.Option(None, help="a KB (with its index) to link the training mentions with (medllm_linker.initialize's train_kb_path), e.g. one built by `medllm build-kb --mentions-min-docs 2`"),
    leave_out: str = typer.Option("mention", help="what training leaves out of the priors: mention or document"),
    context_from: Optional[Path] = typer.Option(None, help="a trained pipeline with a transformer (e.g. training/multitask/model-best): its frozen token vectors give the scorer mention context"),
    abbreviation_mentions: bool = typer.Option(False, help="medllm_linker's abbreviation_mentions: short forms through a definition's other number and through the document's other mentions"),
    nil_bias: List[float] = typer.Option([], help="also score the dev sets at this nil_bias (repeatable; the table's own scores are at 0)"),
    output: Path = typer.Option(Path("metrics/linker_study")),
):
    sets = {}
    for spec in features:
        name, _, names = spec.partition("=")
        if names:
            sets[name] = names.split(",")
        elif not sets:
            raise typer.BadParameter(f"{spec}: the first --features needs NAME=f1,f2,...")
        else:
            sets[name] = next(iter(sets.values())) + [name]
    output.mkdir(parents=True, exist_ok=True)
    devs = [d.split("=", 1) for d in dev]
    context = frozen_context(context_from) if context_from is not None else None
    results = {}
    for set_name, names in sets.items():
        nlp = build(names, seed, width, context, abbreviation_mentions, heads)
        examples = []
        for path in train:
            examples.extend(Corpus(path)(nlp))
        if not examples:
            raise typer.BadParameter(f"no training documents in {', '.join(map(str, train))}")
        linker = nlp.get_pipe("medllm_linker")
        linker.initialize(lambda: examples, nlp=nlp, kb_path=kb, train_kb_path=train_kb, leave_out=leave_out)
        t0 = time.time()
        optimizer = Adam(learn_rate, L2=0.01, grad_clip=1.0, L2_is_weight_decay=True)
        rng = random.Random(seed)
        step = 0
        bar = tqdm(total=steps, desc=set_name, unit="steps")
        losses = {}
        while step < steps:
            order = list(examples)
            rng.shuffle(order)
            for batch in minibatch(order, batch_docs):
                nlp.update(batch, sgd=optimizer, drop=0.1, losses=losses)
                step += 1
                bar.update(1)
                if step >= steps:
                    break
        bar.close()
        train_s = time.time() - t0
        row = {"features": names, "train_s": round(train_s, 1), "train_kb": str(train_kb) if train_kb else None, "leave_out": leave_out,
               "context_from": str(context_from) if context_from else None,
               "abbreviation_mentions": abbreviation_mentions, "heads": heads}
        for dname, dpath in devs:
            gold = list(Corpus(dpath)(nlp))
            gold_docs = [eg.reference for eg in gold]
            hits, queries, _ = link_gold_mentions(nlp, "medllm_linker", gold_docs)
            row[dname] = hits.scores()
            srsly.write_jsonl(output / f"errors_{set_name}_{dname}.jsonl", _errors(nlp, gold_docs))
            for bias in nil_bias:
                linker.cfg["nil_bias"] = bias
                biased, _, _ = link_gold_mentions(nlp, "medllm_linker", gold_docs)
                row[f"{dname}@nil{bias:g}"] = biased.scores()
            linker.cfg["nil_bias"] = 0.0
        results[set_name] = row
        summary = {d: {lab: sc.get("acc@1") for lab, sc in row[d].items()} for d in [d for d, _ in devs] + [f"{d}@nil{b:g}" for d, _ in devs for b in nil_bias]}
        print(set_name, f"{train_s:.0f} s", srsly.json_dumps(summary))
    srsly.write_json(output / "study.json", results)


def _errors(nlp, gold_docs):
    """Each dev mention linked wrong: text, gold ids and names, the answer, the gold's rank."""
    linker = nlp.get_pipe("medllm_linker")
    kb = linker.kb
    from spacy_medllm.kb import ids_match
    for gold in gold_docs:
        doc = nlp.make_doc(gold.text)
        ents, ids = [], []
        for ent in gold.ents:
            gids = split_kb_id(ent.kb_id_)
            span = doc.char_span(ent.start_char, ent.end_char, label=NCBI_DISEASE_LABELS.get(ent.label_, ent.label_))
            if gids and span is not None:
                ents.append(span)
                ids.append(gids)
        doc.ents = ents
        doc = linker(doc)
        for ent, gids in zip(doc.ents, ids):
            if ids_match(kb, ent.kb_id_, set(gids)):
                continue
            ranked = [cid for cid, _ in (ent._.kb_candidates or [])]
            rank = next((i + 1 for i, c in enumerate(ranked) if ids_match(kb, c, set(gids))), None)
            name = lambda c: kb[c].canonical_name if c in kb else None  # noqa: E731
            yield {"text": ent.text, "label": ent.label_, "gold": gids, "gold_name": [name(g) for g in gids],
                   "pred": ent.kb_id_, "pred_name": name(ent.kb_id_), "gold_rank": rank, "top": ranked[:5]}


if __name__ == "__main__":
    typer.run(main)
