"""`medllm assemble`: a trained pipeline made ready to ship as a package.

Training uses the local knowledge base, which may hold vocabularies whose terms allow local
use only (CTD MEDIC, UMLS). Assembling writes a new pipeline folder in which
- every `medllm_linker` reads the KB given (by default the `--use package` KB of
  `medllm build-kb`, without those sources), with its candidate index;
- every `medllm_rel` reads its concept hierarchy from the knowledge graph given (built
  without MEDIC's parent edges for a package);
- `meta.json` states the data sources with their licences (`sources`: the KB's vocabularies
  and the training corpora), and whether the package is for local use only.
A KB that holds a source that may not be redistributed is refused unless `local_only` is
set; then the meta says so in its `notes` and `medllm_local_only`.

`medllm add-components` (`add_components`) chains trained pipelines into one: components of
other pipelines are added to a base pipeline, a listener only onto the very encoder it was
trained on (the relation extractor of Chia on the frozen encoder of the Chia NER).
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import spacy
from spacy.language import Language

from .errors import Errors
from .evaluation.tuning import check_output, write_pipeline
from .kb import CandidateGenerator, KnowledgeBase
from .linker.pipe import MedLinker
from .relations import RelationExtractor

# the corpora the shipped pipelines are trained on, as meta.json `sources` entries
TRAINING_SOURCES: Dict[str, Dict[str, str]] = {
    "bc5cdr": {
        "name": "BioCreative V CDR corpus (BC5CDR): training split (NER, concept ids, CID relations)",
        "url": "https://biocreative.bioinformatics.udel.edu/tasks/biocreative-v/track-3-cdr/",
        "license": "NCBI public domain notice (US Government work); cite Wei et al. 2015 and Li et al. 2016",
    },
    "ncbi_disease": {
        "name": "NCBI disease corpus: training split (linker priors)",
        "url": "https://www.ncbi.nlm.nih.gov/CBBresearch/Dogan/DISEASE/",
        "license": "NCBI public domain notice (US Government work); cite Dogan et al. 2014",
    },
    "ade_corpus_v2": {
        "name": "ADE corpus v2: training split (ADE sentence classification)",
        "url": "https://github.com/trunghlt/AdverseDrugReaction/tree/master/ADE-Corpus-V2",
        "license": "none stated; research use, cite Gurulingappa et al. 2012 (the package holds weights trained on it, not the corpus)",
    },
}


def _kb_sources(kb: KnowledgeBase) -> List[Dict[str, str]]:
    out = []
    for source in kb.sources:
        entry = {"name": f"knowledge base: {source.get('title') or source.get('name')}", "license": str(source.get("licence", "unknown"))}
        if source.get("redistribution"):
            entry["redistribution"] = str(source["redistribution"])
        out.append(entry)
    return out


def not_redistributable(kb: KnowledgeBase) -> List[str]:
    """The KB's sources whose licence allows local use only."""
    return [str(s.get("name")) for s in kb.sources if s.get("redistribution") == "no"]


def assemble(
    model: Union[str, Path], output: Union[str, Path], *, kb_path: Optional[Union[str, Path]] = None,
    hierarchy: Optional[Union[str, Path]] = None, training: Sequence[str] = ("bc5cdr", "ncbi_disease", "ade_corpus_v2"),
    name: Optional[str] = None, version: Optional[str] = None, local_only: bool = False, force: bool = False,
) -> Language:
    """Write the pipeline `model` to `output` with the KB `kb_path`, the hierarchy
    `hierarchy` and a meta that lists its sources; RETURNS the assembled pipeline."""
    model, output = Path(model), Path(output)
    check_output(output, [model], force=force)
    unknown = [t for t in training if t not in TRAINING_SOURCES]
    if unknown:
        raise ValueError(Errors.E007.format(fmt=f"training={unknown}", known=sorted(TRAINING_SOURCES)))
    nlp = spacy.load(model)
    linkers = [p for _, p in nlp.pipeline if isinstance(p, MedLinker)]
    if kb_path is not None:
        kb = KnowledgeBase.from_disk(kb_path)
        index = Path(kb_path) / "index"
        generator = CandidateGenerator.from_disk(index, kb) if index.exists() else None
        for linker in linkers:
            linker.set_kb(kb, generator)
    kbs = [linker.kb for linker in linkers if linker.kb is not None]
    blocked = sorted({s for kb in kbs for s in not_redistributable(kb)})
    if blocked and not local_only:
        raise ValueError(Errors.E145.format(sources=", ".join(blocked)))
    rels = [p for _, p in nlp.pipeline if isinstance(p, RelationExtractor)]
    n_edges = None
    if hierarchy is not None:
        for rel in rels:
            n_edges = rel.knowledge.load_hierarchy(hierarchy)
    sources = [dict(TRAINING_SOURCES[t]) for t in training]
    for kb in kbs[:1]:
        sources.extend(_kb_sources(kb))
    meta = nlp.meta
    if name:
        meta["name"] = name
    if version:
        meta["version"] = version
    meta["sources"] = sources
    meta["medllm_local_only"] = bool(blocked)
    notes = [n for n in str(meta.get("notes") or "").split("\n") if n and not n.startswith("LOCAL USE ONLY")]
    if blocked:
        notes.append(f"LOCAL USE ONLY: the knowledge base holds {', '.join(blocked)}, whose terms forbid redistribution; do not share this package.")
    meta["notes"] = "\n".join(notes)
    meta["medllm_assembled"] = {
        "from": str(model), "kb": str(kb_path) if kb_path else None, "kb_concepts": len(kbs[0]) if kbs else None,
        "hierarchy": str(hierarchy) if hierarchy else None, "hierarchy_edges": n_edges,
    }
    write_pipeline(nlp, output, force=force)
    return nlp


def _listened_to(nlp: Language, name: str) -> List[str]:
    """The components (a transformer, a tok2vec) whose output the component `name` reads."""
    return [up for up, pipe in nlp.pipeline if name in getattr(pipe, "listening_components", [])]


def _same_weights(a, b) -> Optional[str]:
    """None when two upstream components hold the same weights, else what differs."""
    from .layers.chunked import hf_shim

    try:
        sa, sb = hf_shim(a.model)._model.state_dict(), hf_shim(b.model)._model.state_dict()
    except (ValueError, AttributeError):
        return None if a.model.to_bytes() == b.model.to_bytes() else "its weights differ"
    import torch

    if sa.keys() != sb.keys():
        return "another encoder architecture"
    for key in sa:
        if sa[key].shape != sb[key].shape or not torch.equal(sa[key], sb[key]):
            return f"weights differ, first at {key}"
    return None


def add_components(
    base: Union[str, Path], output: Union[str, Path], sources: Sequence[Tuple[Union[str, Path], Sequence[str]]], *, force: bool = False,
    replace: bool = False, local_only: bool = False,
) -> Language:
    """The pipeline `base` with components of other trained pipelines added at its end, and
    written to `output` (a new folder).

    sources: (pipeline, component names) pairs; no names: every component the base lacks.
    A component that reads a shared encoder through a listener (a relation extractor
    trained on the frozen transformer of an NER pipeline) is added only when the base holds
    the same encoder, weight for weight (E158): the added component then reads the base's
    encoder as it did in training, and the NER and the relations share one encoder pass.
    replace: a named component the base already has is replaced in its place (the
    components after it, a relation extractor reading the linker's ids, still run after
    it); without it such a name is refused (E159).
    local_only: an added linker whose KB holds a source that may not be redistributed (CTD
    MEDIC) makes the pipeline local-only, as `assemble` does; without it that is refused
    (E145), so that a package assembled for sharing never takes such a KB in through an
    added component. meta.json records what was added from where (`medllm_added`) and lists
    an added linker's KB sources beside the base's. An added component's scores in its own
    training run replace the base's in `performance`, unless its development data was among
    its training data (a train+dev model: `dev_in_training`); then the replaced component's
    scores are dropped too, and `medllm_added` says why.
    """
    check_output(output, [base, *[src for src, _ in sources]], force=force)
    nlp = spacy.load(base)
    added: List[Dict[str, object]] = []
    checked: Dict[object, tuple] = {}  # source pipeline -> (dev_in_training, _missing_training_data)
    for src_path, names in sources:
        src = spacy.load(src_path)
        chosen = list(names) or [n for n in src.pipe_names if n not in nlp.pipe_names]
        for name in chosen:
            if name not in src.pipe_names:
                raise ValueError(Errors.E157.format(source=src_path, name=name, reason=f"is not one of its components ({', '.join(src.pipe_names)})"))
            before = None
            replaced = name in nlp.pipe_names
            if replaced:
                if not replace:
                    raise ValueError(Errors.E159.format(base=base, name=name))
                at = nlp.pipe_names.index(name)
                before = nlp.pipe_names[at + 1] if at + 1 < len(nlp.pipe_names) else None
                nlp.remove_pipe(name)
            for upstream in _listened_to(src, name):
                if upstream not in nlp.pipe_names:
                    raise ValueError(Errors.E158.format(source=src_path, name=name, upstream=upstream, base=base, reason="the base has none"))
                differs = _same_weights(nlp.get_pipe(upstream), src.get_pipe(upstream))
                if differs:
                    raise ValueError(Errors.E158.format(source=src_path, name=name, upstream=upstream, base=base, reason=differs))
            nlp.add_pipe(name, source=src, before=before)
            # its scores in the training run it came from replace the base's (meta.json
            # `performance`), unless that run scored it on data it trained on
            keys = [*src.get_pipe_meta(name).default_score_weights, f"{name}_loss"]
            record: Dict[str, object] = {"component": name, "from": str(src_path), "replaced": replaced}
            if src_path not in checked:
                checked[src_path] = (dev_in_training(src.config), _missing_training_data(src.config))
            seen, missing = checked[src_path]
            performance = nlp.meta.setdefault("performance", {})
            if seen:
                for key in keys:  # (the replaced component's scores describe another model)
                    performance.pop(key, None)
                record["scores"] = f"not carried: its development data {seen[0]} is among its training data ({seen[1]})"
            else:
                scores = src.meta.get("performance") or {}
                for key in keys:
                    if key in scores:
                        performance[key] = scores[key]
                if missing and any(key in scores for key in keys):
                    record["scores"] = f"carried unchecked: {missing}, so whether its development data was among its training data is not known"
            added.append(record)
    _record_added(nlp, added, local_only)
    write_pipeline(nlp, output, force=force)
    return spacy.load(output)


def _spacy_files(path: Path) -> List[Path]:
    return sorted(path.rglob("*.spacy")) if path.is_dir() else [path] if path.is_file() else []


def _train_dev_paths(config) -> Optional[Tuple[str, str]]:
    """The training config's `paths.train` and `paths.dev`, where both are set."""
    paths = config.get("paths", {}) if hasattr(config, "get") else {}
    train, dev = paths.get("train"), paths.get("dev")
    return (train, dev) if isinstance(train, str) and isinstance(dev, str) and train and dev else None


def dev_in_training(config) -> Optional[Tuple[str, str]]:
    """(development file, training file) when the training config's `paths.dev` data is
    byte for byte among its `paths.train` data (a model trained on train+dev, whose scores
    in meta.json were measured on data it trained on); None when not, or when the files are
    not where the config says (paths are read from the current folder)."""
    import hashlib

    paths = _train_dev_paths(config)
    if paths is None:
        return None
    train, dev = paths

    def digest(file: Path) -> str:
        return hashlib.sha256(file.read_bytes()).hexdigest()

    # only files of the same size are read and compared (a training folder may be large)
    by_size: Dict[int, List[Path]] = {}
    for file in _spacy_files(Path(train)):
        by_size.setdefault(file.stat().st_size, []).append(file)
    for file in _spacy_files(Path(dev)):
        same_size = by_size.get(file.stat().st_size, [])
        if same_size:
            wanted = digest(file)
            for candidate in same_size:
                if digest(candidate) == wanted:
                    return str(file), str(candidate)
    return None


def _missing_training_data(config) -> Optional[str]:
    """What of the training config's `paths.train` / `paths.dev` is not found from the current
    folder (None: both found, or not both set)."""
    paths = _train_dev_paths(config)
    if paths is None:
        return None
    gone = [f"{key} {value}" for key, value in zip(("paths.train", "paths.dev"), paths) if not _spacy_files(Path(value))]
    return f"its training config's {' and '.join(gone)} not found from {Path.cwd()}" if gone else None


def _record_added(nlp: Language, added: List[Dict[str, object]], local_only: bool) -> None:
    """The meta of a pipeline that took components from others: what came from where, the
    KB sources of every linker it now holds, and whether it must stay local (E145)."""
    meta = nlp.meta
    kbs = [p.kb for _, p in nlp.pipeline if isinstance(p, MedLinker) and p.kb is not None]
    blocked = sorted({s for kb in kbs for s in not_redistributable(kb)})
    if blocked and not local_only and not meta.get("medllm_local_only"):
        raise ValueError(Errors.E145.format(sources=", ".join(blocked)))
    sources = list(meta.get("sources") or [])
    for kb in kbs:
        sources.extend(entry for entry in _kb_sources(kb) if entry not in sources)
    if sources:
        meta["sources"] = sources
    if blocked:
        meta["medllm_local_only"] = True
        notes = [n for n in str(meta.get("notes") or "").split("\n") if n and not n.startswith("LOCAL USE ONLY")]
        notes.append(f"LOCAL USE ONLY: the knowledge base holds {', '.join(blocked)}, whose terms forbid redistribution; do not share this package.")
        meta["notes"] = "\n".join(notes)
    meta["medllm_added"] = list(meta.get("medllm_added") or []) + added
