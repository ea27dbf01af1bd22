"""Reader for the PhysioNet "deid" gold-standard nursing notes (`id.text` + `id-phi.phrase`).

`id.text` holds records `START_OF_RECORD=<patient>||||<note>||||` + newline + text +
`||||END_OF_RECORD`; `id-phi.phrase` lists `<patient> <note> <start> <end> <category> <text>`
with offsets into the text after the header's newline. Categories are mapped to the labels of
`medllm_deid` by `PHYSIONET_LABELS`; the source category stays on `doc.spans["mentions"]`.

Split: fixed and by patient (all notes of a patient share it, so the surrogate names of one
patient never sit in two splits): `split_of("physionet_deid/patient/<id>", dev=0.1, test=0.2)`.
"""
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..corpus.base import CorpusError, ErrorPolicy, Mention, ReadStats, annotate, boundaries_of, build_doc, read_text
from ..corpus.splits import split_of
from ..errors import Errors
from ..tokens import install_extensions

PHYSIONET_LABELS: Dict[str, str] = {
    "PTName": "NAME",
    "PTNameInitial": "NAME",
    "HCPName": "NAME",
    "RelativeProxyName": "NAME",
    "Date": "DATE",
    "DateYear": "DATE",
    "Location": "LOCATION",
    "Phone": "PHONE",
    "Age": "AGE",
    "Other": "ID",
}
SPLIT_DEV = 0.1
SPLIT_TEST = 0.2
_RECORD = re.compile(r"START_OF_RECORD=([^|\n]+)\|\|\|\|([^|\n]+)\|\|\|\|\n(.*?)\|\|\|\|END_OF_RECORD", re.DOTALL)


def physionet_split(patient: str) -> str:
    """"train", "dev" or "test" for a PhysioNet deid patient id (fixed, see the module doc)."""
    return split_of(f"physionet_deid/patient/{patient}", dev=SPLIT_DEV, test=SPLIT_TEST)


def read_records(path: Union[str, Path]) -> Iterator[Tuple[str, str, str, int]]:
    """(patient, note, text, line of the header) for each record of an `id.text` file."""
    data = read_text(path)
    for m in _RECORD.finditer(data):
        yield m.group(1).strip(), m.group(2).strip(), m.group(3), data.count("\n", 0, m.start()) + 1


def read_phi(path: Union[str, Path], policy: Optional[ErrorPolicy] = None) -> Dict[Tuple[str, str], List[Tuple[int, int, str, str]]]:
    """(patient, note) -> [(start, end, category, text)] from an `id-phi.phrase` file."""
    out: Dict[Tuple[str, str], List[Tuple[int, int, str, str]]] = defaultdict(list)
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 5)
        try:
            pid, note, s, e, cat = parts[:5]
            start, end = int(s), int(e)
        except ValueError:
            reason = f"expected '<patient> <note> <start> <end> <category> <text>', got {line[:60]!r}"
            if policy is None:
                raise CorpusError(path, line_no, reason) from None
            policy(line_no, reason, "line")
            continue
        out[(pid, note)].append((start, end, cat, parts[5] if len(parts) > 5 else ""))
    return out


def read_physionet(
    src: Union[str, Path],
    nlp: Language,
    *,
    split: Optional[str] = None,
    on_error: str = "raise",
    stats: Optional[ReadStats] = None,
) -> Iterator[Doc]:
    """Yield one Doc per note of the PhysioNet deid corpus in folder `src`.

    split (Optional[str]): "train", "dev" or "test" (see `physionet_split`); None: all notes.
    YIELDS (Doc): `doc.ents` with `PHYSIONET_LABELS`, `doc.spans["mentions"]` with the source
        categories, `doc._.medllm_doc_id` = "<patient>-<note>".
    """
    install_extensions()
    src = Path(src)
    text_path, phi_path = src / "id.text", src / "id-phi.phrase"
    for p in (text_path, phi_path):
        if not p.exists():
            raise FileNotFoundError(Errors.E003.format(path=p))
    stats = stats if stats is not None else ReadStats()
    policy = ErrorPolicy(phi_path, on_error, stats)
    phi = read_phi(phi_path, policy)
    for pid, note, text, line in read_records(text_path):
        if split is not None and physionet_split(pid) != split:
            continue
        mentions = []
        for start, end, cat, phrase in phi.get((pid, note), ()):
            if not 0 <= start < end <= len(text):
                policy(line, f"note {pid}-{note}: PHI offsets {start}-{end} lie outside the text (length {len(text)})", "phi")
                continue
            if phrase and text[start:end] != phrase:
                stats.notes["phi_text_mismatch"] += 1
            mentions.append(Mention(start, end, cat))
        doc = build_doc(nlp.vocab, nlp.make_doc, text, boundaries_of(mentions))
        annotate(doc, mentions, ent_label_map=PHYSIONET_LABELS)
        doc._.medllm_doc_id = f"{pid}-{note}"
        doc._.medllm_rels = []
        stats.add_doc(doc)
        yield doc
    policy.report()


def convert_physionet(src: Union[str, Path], out_dir: Union[str, Path], nlp: Optional[Language] = None) -> Dict[str, Dict[str, object]]:
    """Write `train/dev/test.spacy` of the PhysioNet deid corpus; returns the counts per split."""
    import spacy

    nlp = nlp if nlp is not None else spacy.blank("en")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for split in ("train", "dev", "test"):
        stats = ReadStats()
        db = DocBin(store_user_data=True)
        for doc in read_physionet(src, nlp, split=split, stats=stats):
            db.add(doc)
        db.to_disk(out_dir / f"{split}.spacy")
        result[split] = stats.to_dict()
    return result


if __name__ == "__main__":  # python -m spacy_medllm.deid.physionet SRC OUT_DIR
    import sys

    import srsly

    counts = convert_physionet(sys.argv[1], sys.argv[2])
    srsly.write_json(Path(sys.argv[2]) / "stats.json", counts)
    for name, s in counts.items():
        sys.stdout.write(f"{name}: {s['documents']} notes, {s['mentions']} PHI, {s['labels']}\n")
