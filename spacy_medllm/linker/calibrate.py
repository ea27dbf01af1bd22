"""`medllm calibrate-nil`: a trained `medllm_linker`'s NIL bias per entity label, read off its
own training mentions.

`nil_bias` trades gold-mention accuracy (an abstention on a real mention is wrong) for
end-to-end precision (an abstention drops a spurious NER span). A fixed bias means a different
thing for each trained model: the NIL slot's score is learned from the few NIL mentions of the
training data, so models of different training seeds put it at different heights and the same
bias abstains more often in one than in another (README: three seeds of one recipe lost 0.1 to
1.1 points of BC5CDR test acc@1 to the same setting).

Calibration reads the model's own scores on its training mentions, featurized exactly as
training featurized them (linked with the training KB, the mention's document left out of the
priors and concept counts): the features-only scorer cannot learn individual mentions, so these
scores stand in for unseen text without a held-out set (the train+dev model has none). Per
label, the chosen bias is the largest of the grid whose accuracy on those mentions is at most
`max_cost` points below the accuracy at bias 0. The answer is chosen as the component chooses
it (`choose_slot`).
"""
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from ..errors import Errors
from ..tokens import NIL
from .pipe import MedLinker, choose_slot, load_kb_and_generator

# 0 to 8 in steps of 0.25: the NIL scores of trained models sit within a few units of the best
# candidate's; the largest bias measured useful end to end on dev was 5 (README)
GRID: Tuple[float, ...] = tuple(i / 4 for i in range(33))

# (label, scores: slot 0 NIL then the candidates, right: one flag per candidate)
Scored = Tuple[str, numpy.ndarray, numpy.ndarray]


def training_scores(nlp: Language, name: str, docs: Iterable[Doc], *, batch_size: int = 32,
                    progress: Optional[Callable[[int], None]] = None) -> List[Scored]:
    """The linker `name`'s scores on the gold mentions with an id of `docs` (gold Docs), each
    featurized as `MedLinker.update` featurizes a training mention; a candidate is right
    when its id is one of the gold primary ids (the slot training teaches)."""
    linker: MedLinker = nlp.get_pipe(name)
    out: List[Scored] = []

    def run(refs: List[Doc]) -> None:
        examples = [Example(nlp.make_doc(ref.text), ref) for ref in refs]
        mentions, gold, arrays, cands = linker.training_batch(examples)
        if not gold:
            return
        logits = linker.model.ops.to_numpy(linker.model.predict(([eg.predicted for eg in examples], arrays)))
        j = 0
        for doc_mentions in mentions:
            for ent, _, _ in doc_mentions:
                if gold[j] and gold[j] != NIL:
                    ids = set(linker._primary_ids(gold[j]))
                    cs = cands[j]
                    out.append((ent.label_, logits[j, : len(cs) + 1].astype("float64"), numpy.array([cid in ids for cid, _ in cs], dtype=bool)))
                j += 1

    docs = list(docs)
    for start in range(0, len(docs), batch_size):
        run(docs[start : start + batch_size])
        if progress is not None:
            progress(min(start + batch_size, len(docs)))
    return out


def accuracy_curves(scored: Sequence[Scored], grid: Sequence[float] = GRID, threshold: Optional[float] = None) -> Dict[str, Dict[str, object]]:
    """Per label: the number of mentions and acc@1 (percent) at each bias of `grid`."""
    by_label: Dict[str, List[Scored]] = defaultdict(list)
    for row in scored:
        by_label[row[0]].append(row)
    curves = {}
    for label, rows in sorted(by_label.items()):
        acc = []
        for bias in grid:
            right = 0
            for _, scores, flags in rows:
                slot = choose_slot(scores, len(flags), bias, threshold)
                right += slot > 0 and bool(flags[slot - 1])
            acc.append(100.0 * right / len(rows))
        curves[label] = {"n": len(rows), "bias": [float(b) for b in grid], "acc": acc}
    return curves


def choose_biases(curves: Dict[str, Dict[str, object]], max_cost: float) -> Dict[str, float]:
    """Per label, the largest bias whose acc@1 is at most `max_cost` points below the
    accuracy at the grid's bias 0 (the grid's first value when it has no 0)."""
    chosen = {}
    for label, curve in curves.items():
        biases, acc = curve["bias"], curve["acc"]
        base = acc[biases.index(0.0)] if 0.0 in biases else acc[0]
        ok = [b for b, a in zip(biases, acc) if base - a <= max_cost + 1e-9]
        chosen[label] = max(ok) if ok else 0.0
    return chosen


def calibrate_nil(
    model: Union[str, Path], output: Union[str, Path], data: Sequence[Union[str, Path]], *,
    train_kb: Optional[Union[str, Path]] = None, max_cost: float = 0.2, grid: Sequence[float] = GRID,
    force: bool = False, report_path: Optional[Union[str, Path]] = None, progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, object]:
    """Calibrate the `nil_bias` of `model`'s linker on the training mentions of `data` (the
    .spacy files it was trained on) and write the pipeline with the setting saved to `output`.

    train_kb: the KB (folder) training linked its mentions with (the linker's
    `initialize.train_kb_path`; not saved with the pipeline); without it the training
    mentions are linked with the pipeline's own KB, which holds them as names.
    RETURNS (dict): {"model", "output", "max_cost", "nil_bias", "before", "curves"}.
    """
    import spacy

    from ..evaluation.linker import linker_name
    from ..evaluation.tuning import check_output, write_pipeline

    say = progress or (lambda msg: None)
    if not 0.0 <= float(max_cost) < 100.0 or not numpy.isfinite(max_cost):
        raise ValueError(Errors.E154.format(path="calibrate-nil --max-cost", reason=f"{max_cost!r}: a number of accuracy points, 0 <= x < 100"))
    if not grid or any(not numpy.isfinite(b) for b in grid):
        raise ValueError(Errors.E154.format(path="calibrate-nil grid", reason=f"{list(grid)!r}: finite biases"))
    paths = [Path(p) for p in data]
    if not paths:
        raise ValueError(Errors.E154.format(path="calibrate-nil --data", reason="no training .spacy file given"))
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(Errors.E003.format(path=p))
    if train_kb is not None and not Path(train_kb).is_dir():
        raise FileNotFoundError(Errors.E003.format(path=train_kb))
    check_output(output, [model], force=force)
    nlp = spacy.load(model)
    name = linker_name(nlp, model)
    linker: MedLinker = nlp.get_pipe(name)
    linker._require_initialized()
    if train_kb is not None:
        linker.train_kb, linker.train_generator = load_kb_and_generator(Path(train_kb))
    scored: List[Scored] = []
    for path in paths:
        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        say(f"{path}: {len(docs)} documents")
        scored.extend(training_scores(nlp, name, docs, progress=lambda n, p=path, t=len(docs): say(f"{p}: {n}/{t} documents")))
    linker.train_kb = linker.train_generator = None
    if not scored:
        raise ValueError(Errors.E154.format(path="calibrate-nil --data", reason=f"no gold mention with an id in {', '.join(map(str, paths))}"))
    curves = accuracy_curves(scored, grid, linker.cfg.get("threshold"))
    chosen = choose_biases(curves, max_cost)
    before = linker.cfg.get("nil_bias", 0.0)
    linker.cfg["nil_bias"] = dict(chosen)
    nlp.get_pipe_config(name)["nil_bias"] = dict(chosen)
    write_pipeline(nlp, output, force=force)
    result = {"model": str(model), "output": str(output), "max_cost": float(max_cost), "nil_bias": chosen, "before": before, "curves": curves}
    if report_path is not None:
        srsly.write_json(report_path, result)
    return result
