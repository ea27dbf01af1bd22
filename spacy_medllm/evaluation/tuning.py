"""Per-label thresholds of a trained pipeline's relation components, tuned on dev and
written to a new pipeline folder.

`tune_relation_thresholds` loads the pipeline, gives the dev documents their gold entities
and ids (aligned to the pipeline's tokens; components that write entities or ids are
skipped, `spacy_medllm.relations.gold_entity_docs`), and lets each `medllm_rel` choose its
thresholds with its own `tune_thresholds` (each label's threshold maximizes its F1 on dev,
in the scorer's units). The tuned pipeline is written anew with `nlp.to_disk(output)`:
the input pipeline is only read, never edited, and nothing is deleted but an output the
caller allowed to be replaced (`force`).

With `other` (e.g. `model-last` beside `model-best`) both are tuned and the one with the
higher tuned dev F1 (averaged over labels, weighted by their gold counts) is written:
training selects checkpoints at a fixed threshold of 0.5, which says little about a model
whose tuned threshold is far from it.

`copy_relation_thresholds` tunes nothing: the pipeline's relation components take the
thresholds of the components of the same name of another, tuned pipeline (read with
`spacy.load`). This is for a final model trained on train + dev with the settings of a run
trained on train alone: dev can no longer choose its threshold, the train-only run's
tuned one stands in.
"""
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import spacy
import srsly
from spacy.language import Language
from spacy.tokens import DocBin

from ..errors import Errors
from ..relations import RelationExtractor, gold_entity_docs

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
Report = Dict[str, Dict[str, Dict[str, object]]]  # component -> label -> threshold, relative_threshold, f, gold


def relation_components(nlp: Language, model: PathLike = "") -> List[str]:
    """The names of the pipeline's `medllm_rel` components (E122 if it has none)."""
    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, RelationExtractor)]
    if not names:
        raise ValueError(Errors.E122.format(path=model, pipes=", ".join(nlp.pipe_names) or "none"))
    return names


def check_output(output: PathLike, inputs: Sequence[PathLike], *, force: bool = False) -> Path:
    """Refuse an output that is an input pipeline, lies inside one or holds one (E121,
    even with `force`), and an output that exists without `force` (E120)."""
    out = Path(output).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise ValueError(Errors.E121.format(path=output, input=given))
    if out.exists() and not force:
        raise FileExistsError(Errors.E120.format(path=output))
    return out


def write_pipeline(nlp: Language, output: PathLike, *, force: bool = False) -> Path:
    """`nlp.to_disk` into a new folder beside `output`, then put it in place, so a failed
    write leaves no half-written pipeline; an existing output (allowed with `force`) is
    replaced only once the new one is complete."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        nlp.to_disk(tmp)
        if out.exists() or out.is_symlink():
            if not force:  # appeared while we wrote
                raise FileExistsError(Errors.E120.format(path=output))
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            else:
                out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def weighted_f(report: Report) -> float:
    """The tuned dev F1 averaged over every component's labels, weighted by their gold counts."""
    rows = [r for per_label in report.values() for r in per_label.values()]
    gold = sum(int(r["gold"]) for r in rows)
    return sum(float(r["f"]) * int(r["gold"]) for r in rows) / gold if gold else 0.0


def tune_pipeline(nlp: Language, dev_path: PathLike, *, relative: bool = False, model: PathLike = "") -> Report:
    """Tune the thresholds of every relation component of `nlp` (in memory) on dev."""
    names = relation_components(nlp, model)
    if not Path(dev_path).exists():
        raise FileNotFoundError(Errors.E003.format(path=dev_path))
    gold_docs = list(DocBin().from_disk(dev_path).get_docs(nlp.vocab))
    report: Report = {}
    for name in names:
        rel = nlp.get_pipe(name)
        before = {label: rel.threshold_of(label) for label in rel.labels}
        report[name] = rel.tune_thresholds(gold_entity_docs(nlp, gold_docs, upto=name), relative=relative)
        for label, r in report[name].items():
            logger.info(
                "%s %s %s: threshold %s -> %s%s (dev F1 %.2f, %s gold)", model, name, label, before.get(label), r["threshold"],
                f", relative threshold {r['relative_threshold']}" if relative else "", 100 * float(r["f"]), r["gold"],
            )
    return report


def tune_relation_thresholds(
    model_path: PathLike, dev_path: PathLike, output_path: PathLike, *, other: Optional[PathLike] = None,
    relative: bool = False, force: bool = False, report_path: Optional[PathLike] = None,
) -> Dict[str, object]:
    """Tune the relation thresholds of `model_path` on `dev_path` and write the tuned
    pipeline to the new folder `output_path`.

    other: a second pipeline (e.g. model-last) tuned the same way; the one with the higher
        weighted dev F1 is written (the first on a tie).
    relative: also tune each label's relative threshold (see the `medllm_rel` factory).
    force: replace an existing `output_path` (never an input pipeline, E121).
    report_path: a JSON file for the report.
    RETURNS (dict): {"model", "other", "chosen", "dev", "output", "dev_f", "thresholds"}.
    """
    inputs = [model_path] + ([other] if other else [])
    check_output(output_path, inputs, force=force)
    for given in inputs:
        if not Path(given).exists():
            raise FileNotFoundError(Errors.E003.format(path=given))
    nlp = spacy.load(model_path)
    report = tune_pipeline(nlp, dev_path, relative=relative, model=model_path)
    chosen, chosen_nlp, chosen_report = model_path, nlp, report
    dev_f = {str(model_path): round(weighted_f(report), 4)}
    if other:
        other_nlp = spacy.load(other)
        other_report = tune_pipeline(other_nlp, dev_path, relative=relative, model=other)
        dev_f[str(other)] = round(weighted_f(other_report), 4)
        logger.info("tuned dev F1: %s %.2f, %s %.2f", model_path, 100 * weighted_f(report), other, 100 * weighted_f(other_report))
        if weighted_f(other_report) > weighted_f(report):
            chosen, chosen_nlp, chosen_report = other, other_nlp, other_report
    write_pipeline(chosen_nlp, output_path, force=force)
    result = {
        "model": str(model_path), "other": str(other) if other else None, "chosen": str(chosen), "dev": str(dev_path),
        "output": str(output_path), "dev_f": dev_f, "thresholds": chosen_report,
    }
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(report_path, result)
    return result


def copy_relation_thresholds(
    model_path: PathLike, source_path: PathLike, output_path: PathLike, *, force: bool = False,
    report_path: Optional[PathLike] = None,
) -> Dict[str, object]:
    """Write `model_path` to the new folder `output_path` with the thresholds of the
    relation components of the same name in `source_path` (all checked before anything is
    written: a source without such a component, E123, or never tuned, E124, is refused).
    RETURNS (dict): {"model", "source", "output", "thresholds": {component: {thresholds,
        relative_thresholds}}}.
    """
    check_output(output_path, [model_path, source_path], force=force)
    for given in (model_path, source_path):
        if not Path(given).exists():
            raise FileNotFoundError(Errors.E003.format(path=given))
    nlp = spacy.load(model_path)
    names = relation_components(nlp, model_path)
    source = spacy.load(source_path)
    theirs = {name: pipe for name, pipe in source.pipeline if isinstance(pipe, RelationExtractor)}
    copied: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name in names:
        if name not in theirs:
            raise ValueError(Errors.E123.format(path=source_path, name=name, names=", ".join(theirs) or "none"))
        cfg = theirs[name].cfg
        if not cfg.get("thresholds"):
            raise ValueError(Errors.E124.format(path=source_path, name=name))
        copied[name] = {"thresholds": dict(cfg["thresholds"]), "relative_thresholds": dict(cfg.get("relative_thresholds") or {})}
    for name, values in copied.items():
        rel = nlp.get_pipe(name)
        rel.cfg["thresholds"] = dict(values["thresholds"])
        rel.cfg["relative_thresholds"] = dict(values["relative_thresholds"])
        logger.info("%s %s: thresholds %s, relative %s (from %s)", model_path, name, values["thresholds"], values["relative_thresholds"], source_path)
    write_pipeline(nlp, output_path, force=force)
    result = {"model": str(model_path), "source": str(source_path), "output": str(output_path), "thresholds": copied}
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(report_path, result)
    return result
