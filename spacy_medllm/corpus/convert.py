"""Convert the raw corpora to spaCy's binary `.spacy` files, one per split.

Each corpus has a fixed file layout (as published upstream); `convert_corpus`
reads the splits with the matching reader and writes `<split>.spacy` plus a
`stats.json` with the counts each reader reported.
"""
import logging
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import spacy
import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..errors import Errors
from ..tokenizer import create_biomedical_tokenizer
from .base import ReadStats

logger = logging.getLogger("spacy_medllm")


def blank_biomedical(lang: str = "en") -> Language:
    """A blank pipeline with the biomedical tokenizer (the tokenizer the configs use)."""
    nlp = spacy.blank(lang)
    nlp.tokenizer = create_biomedical_tokenizer()(nlp)
    return nlp


def _bc5cdr(src: Path, nlp: Language, on_error: str, stats: Dict[str, ReadStats]) -> Iterator[Tuple[str, Iterable[Doc]]]:
    from .pubtator import read_pubtator

    files = {"train": "CDR_TrainingSet.PubTator.txt", "dev": "CDR_DevelopmentSet.PubTator.txt", "test": "CDR_TestSet.PubTator.txt"}
    _require(src, files.values())
    for split, name in files.items():
        stats[split] = ReadStats()
        yield split, read_pubtator(src / name, nlp, on_error=on_error, stats=stats[split])


def _ncbi_disease(src: Path, nlp: Language, on_error: str, stats: Dict[str, ReadStats]) -> Iterator[Tuple[str, Iterable[Doc]]]:
    from ..tokens import NCBI_LABELS
    from .pubtator import read_pubtator

    files = {"train": "NCBItrainset_corpus.txt", "dev": "NCBIdevelopset_corpus.txt", "test": "NCBItestset_corpus.txt"}
    _require(src, [files["train"], files["dev"]])
    for split, name in files.items():
        if not (src / name).exists():
            logger.info("%s: no %s split (%s not found)", src, split, name)
            continue
        stats[split] = ReadStats()
        yield split, read_pubtator(src / name, nlp, on_error=on_error, ent_label_map=NCBI_LABELS, stats=stats[split])


def _ade(src: Path, nlp: Language, on_error: str, stats: Dict[str, ReadStats]) -> Iterator[Tuple[str, Iterable[Doc]]]:
    from .ade import read_ade

    _require(src, ["DRUG-AE.rel", "DRUG-DOSE.rel", "ADE-NEG.txt"])
    for split in ("train", "dev", "test"):
        stats[split] = ReadStats()
        yield split, read_ade(src, nlp, split=split, on_error=on_error, stats=stats[split])


def _chia(src: Path, nlp: Language, on_error: str, stats: Dict[str, ReadStats]) -> Iterator[Tuple[str, Iterable[Doc]]]:
    from .brat import read_chia

    path = src / "chia_with_scope.zip" if src.is_dir() else src
    if not path.exists():
        raise FileNotFoundError(Errors.E009.format(path=src, expected="chia_with_scope.zip"))
    for split in ("train", "dev", "test"):
        stats[split] = ReadStats()
        yield split, read_chia(path, nlp, split=split, on_error=on_error, stats=stats[split])


CORPORA: Dict[str, Callable] = {"bc5cdr": _bc5cdr, "ncbi_disease": _ncbi_disease, "ade": _ade, "chia": _chia}


def _require(src: Path, names: Iterable[str]) -> None:
    names = list(names)
    if not src.is_dir() or not any((src / n).exists() for n in names):
        raise FileNotFoundError(Errors.E009.format(path=src, expected=", ".join(names)))
    for n in names:
        if not (src / n).exists():
            raise FileNotFoundError(Errors.E003.format(path=src / n))


def convert_corpus(
    fmt: str,
    src: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    on_error: str = "raise",
    nlp: Optional[Language] = None,
    progress: Optional[Callable[[str, int], None]] = None,
) -> Dict[str, Dict[str, object]]:
    """Read a corpus with its reader and write `<out_dir>/<split>.spacy` and `stats.json`.

    fmt (str): "bc5cdr", "ncbi_disease", "ade" or "chia".
    src (Path): the folder with the corpus files as published upstream.
    out_dir (Path): where the `.spacy` files go; a split is written only once it was read
        whole, so an error never leaves a half-written file behind.
    RETURNS (dict): the counts per split.
    """
    if fmt not in CORPORA:
        raise ValueError(Errors.E007.format(fmt=fmt, known=", ".join(sorted(CORPORA))))
    nlp = nlp if nlp is not None else blank_biomedical()
    src, out_dir = Path(src), Path(out_dir)
    stats: Dict[str, ReadStats] = {}
    pending: List[Tuple[str, DocBin]] = []
    for split, docs in CORPORA[fmt](src, nlp, on_error, stats):
        db = DocBin(store_user_data=True)
        for i, doc in enumerate(docs, start=1):
            db.add(doc)
            if progress is not None and i % 100 == 0:
                progress(split, i)
        pending.append((split, db))
    # all splits read without error: only now touch the output folder
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, db in pending:
        tmp = out_dir / f".{split}.spacy.tmp"
        db.to_disk(tmp)
        tmp.replace(out_dir / f"{split}.spacy")
    result = {split: s.to_dict() for split, s in stats.items()}
    srsly.write_json(out_dir / "stats.json", result)
    return result
