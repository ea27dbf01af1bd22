"""Knowledge base builders, one per vocabulary format.

Concept ids follow the corpora: bare MeSH ids (`D008750`, supplementary `C012345`)
and `OMIM:` prefixed OMIM ids; CTD's `MESH:` prefix is dropped. Types are MeSH
tree numbers, UMLS semantic types (`T047`), and a coarse category (`Chemical`,
`Disease`) that the linker compares with the NER label.
"""
import gzip
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import srsly
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..corpus.base import CorpusError, decode, iter_lines, read_text, split_kb_id
from .knowledge_base import Concept, KnowledgeBase

CHEMICAL, DISEASE = "Chemical", "Disease"


def bare_id(concept_id: str) -> str:
    """`MESH:D001` -> `D001`; other prefixes (`OMIM:`) are kept."""
    return concept_id[5:] if concept_id.startswith("MESH:") else concept_id


def mesh_category(tree_numbers: Iterable[str]) -> List[str]:
    """Coarse categories from MeSH tree numbers: C (diseases) and F03 (mental disorders)
    are `Disease`, D (chemicals and drugs) is `Chemical`."""
    cats = []
    for tn in tree_numbers:
        if (tn.startswith("C") or tn.startswith("F03")) and DISEASE not in cats:
            cats.append(DISEASE)
        elif tn.startswith("D") and CHEMICAL not in cats:
            cats.append(CHEMICAL)
    return cats


def _tsv_rows(path: Path, text: str, n_cols: int, skip_header: bool = True) -> Iterator[List[str]]:
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.startswith("#") or (skip_header and line_no == 1):
            continue
        cols = line.rstrip("\r").split("\t")
        if len(cols) < n_cols:
            raise CorpusError(path, line_no, f"expected {n_cols} tab-separated columns, found {len(cols)}")
        yield cols


def read_mesh(terms: Union[str, Path], tree_numbers: Optional[Union[str, Path]] = None) -> Iterator[Concept]:
    """MeSH descriptors from `terms.tsv` (`mesh_id`, `mesh_name`) and `tree-numbers.tsv`."""
    trees: Dict[str, List[str]] = {}
    if tree_numbers is not None:
        path = Path(tree_numbers)
        for cols in _tsv_rows(path, read_text(path), 3):
            trees.setdefault(cols[0], []).append(cols[2])
    path = Path(terms)
    for cols in _tsv_rows(path, read_text(path), 2):
        tns = trees.get(cols[0], [])
        yield Concept(cols[0], cols[1], [], mesh_category(tns) + tns)


def read_medic(path: Union[str, Path]) -> Iterator[Concept]:
    """CTD MEDIC (`CTD_diseases.tsv[.gz]`): names, synonyms, definitions, tree numbers.

    Alternative ids (`AltDiseaseIDs`) map to the same concept: they are not separate
    concepts, so they are not returned here; `medic_alt_ids` gives the mapping.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    for cols in _tsv_rows(path, decode(data, path), 8, skip_header=False):
        name, cid, _alt, definition, _parents, tree_numbers = cols[:6]
        synonyms = [s for s in cols[7].split("|") if s] if len(cols) > 7 else []
        tns = [t for t in tree_numbers.split("|") if t]
        yield Concept(bare_id(cid), name, synonyms, [DISEASE] + tns, definition or None)


def read_umls_rrf(meta_dir: Union[str, Path], languages: Iterable[str] = ("ENG",)) -> Iterator[Concept]:
    """UMLS Metathesaurus concepts from `MRCONSO.RRF`, `MRSTY.RRF` and `MRDEF.RRF`.

    The canonical name is the first preferred (`TS=P`, `STT=PF`, `ISPREF=Y`) English
    string, otherwise the first string; types are the semantic type ids (`T047`).
    """
    meta = Path(meta_dir)
    langs = set(languages)
    names: Dict[str, List[str]] = {}
    preferred: Dict[str, str] = {}
    for line_no, cols in _rrf_rows(meta / "MRCONSO.RRF", 15, "CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|..."):
        cui, lat, ts, stt, ispref, text = cols[0], cols[1], cols[2], cols[4], cols[6], cols[14]
        if lat not in langs:
            continue
        names.setdefault(cui, [])
        if text not in names[cui]:
            names[cui].append(text)
        if ts == "P" and stt == "PF" and ispref == "Y" and cui not in preferred:
            preferred[cui] = text
    types: Dict[str, List[str]] = {}
    if (meta / "MRSTY.RRF").exists():
        for _, cols in _rrf_rows(meta / "MRSTY.RRF", 2, "CUI|TUI|..."):
            types.setdefault(cols[0], []).append(cols[1])
    definitions: Dict[str, str] = {}
    if (meta / "MRDEF.RRF").exists():
        for _, cols in _rrf_rows(meta / "MRDEF.RRF", 6, "CUI|AUI|ATUI|SATUI|SAB|DEF|..."):
            definitions.setdefault(cols[0], cols[5])
    for cui, strings in names.items():
        canonical = preferred.get(cui, strings[0])
        yield Concept(cui, canonical, [s for s in strings if s != canonical], types.get(cui, []), definitions.get(cui))


def _rrf_rows(path: Path, n_cols: int, layout: str) -> Iterator[Tuple[int, List[str]]]:
    for line_no, line in iter_lines(path):
        cols = line.split("|")
        if len(cols) < n_cols:
            raise CorpusError(path, line_no, f"expected at least {n_cols} '|'-separated columns ({layout}), found {len(cols)}")
        yield line_no, cols


def read_scispacy_kb(path: Union[str, Path]) -> Iterator[Concept]:
    """scispaCy's KB format: a JSON list or JSONL of {concept_id, canonical_name, aliases, types, definition}."""
    path = Path(path)
    text = read_text(path)
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    records.append((line_no, srsly.json_loads(line)))
                except ValueError as err:
                    raise CorpusError(path, line_no, f"not valid JSON ({err})") from None
    else:
        try:
            data = srsly.json_loads(text)
        except ValueError as err:
            raise CorpusError(path, None, f"not valid JSON ({err})") from None
        if not isinstance(data, list):
            raise CorpusError(path, None, "expected a JSON list of concepts")
        records = [(None, r) for r in data]
    for line_no, r in records:
        if not isinstance(r, dict) or not r.get("concept_id") or "canonical_name" not in r:
            raise CorpusError(path, line_no, "each concept needs 'concept_id' and 'canonical_name'")
        yield Concept(str(r["concept_id"]), r["canonical_name"], list(r.get("aliases") or []), list(r.get("types") or []), r.get("definition"))


def read_mentions(docbins: Iterable[Union[str, Path]], vocab: Optional[Vocab] = None) -> Iterator[Concept]:
    """Aliases mined from annotated mentions (`.spacy` files; use training splits only).

    Each linked mention adds its text as an alias of each of its ids (`D1|D2` gives both),
    with the mention label as a type; `NIL` mentions are skipped.
    """
    vocab = vocab if vocab is not None else Vocab()
    for path in docbins:
        for doc in DocBin().from_disk(path).get_docs(vocab):
            spans = doc.spans["mentions"] if "mentions" in doc.spans else doc.ents
            for span in spans:
                ids = split_kb_id(span.kb_id_)
                # a composite mention ("ovarian and breast cancer") names none of its ids alone
                if len(ids) != 1:
                    continue
                label = DISEASE if span.label_ in ("SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention") else span.label_
                yield Concept(ids[0], span.text, [], [label])


def build_kb(
    mesh_dir: Optional[Union[str, Path]] = None,
    medic: Optional[Union[str, Path]] = None,
    mention_files: Iterable[Union[str, Path]] = (),
    umls_meta: Optional[Union[str, Path]] = None,
    scispacy_kbs: Iterable[Union[str, Path]] = (),
) -> KnowledgeBase:
    """Layer the sources into one knowledge base: MeSH, MEDIC, UMLS, scispaCy KBs, then mentions.

    Mention aliases are added only to concepts that a vocabulary source defines, or as
    new concepts named by their first mention (the many MeSH supplementary records that
    MeSH 2015 descriptors lack).
    """
    kb = KnowledgeBase()
    if mesh_dir is not None:
        mesh_dir = Path(mesh_dir)
        for c in read_mesh(mesh_dir / "terms.tsv", mesh_dir / "tree-numbers.tsv"):
            kb.add(c)
    if medic is not None:
        for c in read_medic(medic):
            kb.add(c)
    if umls_meta is not None:
        for c in read_umls_rrf(umls_meta):
            kb.add(c)
    for path in scispacy_kbs:
        for c in read_scispacy_kb(path):
            kb.add(c)
    for c in read_mentions(mention_files):
        kb.add(c)
    return kb
