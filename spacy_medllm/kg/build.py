"""The knowledge graph: triples over knowledge base concept ids.

Sources, each a relation of its own:

- `isa`: MeSH tree edges, child descriptor -> parent descriptor (from tree numbers).
- `medic_parent`: CTD MEDIC `ParentIDs` edges that the MeSH tree does not already give
  (OMIM diseases, supplementary records, MEDIC's own additions). An edge present in
  both is kept once, as `isa`: the same fact under two relation names would let a
  held-out triple be read off its twin in training.
- `induces`: chemical -> disease pairs of the BC5CDR CID relations, from the training
  split only (dev / test relations in the graph would leak into the evaluation).
- `has_pharmacological_action`: substance -> action descriptor (olanzapine ->
  Antipsychotic Agents), from the MeSH pharmacological actions table (15,128 pairs in
  MeSH 2024, substances being descriptors or supplementary records).
- `has_semantic_type` and `semnet:<relation>`: the UMLS semantic network that ships
  inside PyKEEN (`pykeen.datasets.UMLS`, 135 semantic types, 46 relations), tied to the
  concepts through their MeSH tree numbers (an approximate map, `TREE_SEMANTIC_TYPES`),
  UMLS semantic type ids (`T047`) when the knowledge base has them, or the coarse
  `Chemical` / `Disease` category.

Every id is mapped to its concept's primary id in the knowledge base first (a 2024
descriptor id to the 2015 supplementary record it was, see `spacy_medllm.kb.ids`), so
the graph's entities are the KB's concept ids (counted as `mapped_to_primary_id`).

Triples are written as a three-column TSV (head, relation, tail; PyKEEN's format)
with a `stats.json` beside it.
"""
import gzip
import importlib.util
import logging
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

import srsly
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..io import VocabularyError
from ..io import decode, iter_lines
from ..kb.builders import _tsv_rows, bare_id, mesh_action_pairs, read_mesh
from ..kb.knowledge_base import KnowledgeBase
from ..tokens import CHEMICAL, DISEASE, get_relations, install_extensions, split_kb_id

logger = logging.getLogger("spacy_medllm")

Triple = Tuple[str, str, str]

ISA = "isa"
MEDIC_PARENT = "medic_parent"
INDUCES = "induces"
HAS_PHARMACOLOGICAL_ACTION = "has_pharmacological_action"
HAS_SEMANTIC_TYPE = "has_semantic_type"
SEMNET_PREFIX = "semnet:"
SEMTYPE_PREFIX = "semtype:"
STATS_FORMAT = "spacy_medllm.kg_stats"

TREE_NUMBER = re.compile(r"^[A-Z]\d{2}(\.\d{3})*$")

# MeSH tree prefixes -> UMLS semantic type (PyKEEN UMLS entity names); the longest
# matching prefix wins. An approximation of what UMLS assigns descriptor by descriptor,
# good enough to place a concept in the semantic network.
TREE_SEMANTIC_TYPES: Dict[str, str] = {
    "A": "anatomical_structure",
    "B": "organism",
    "C": "disease_or_syndrome",
    "C04": "neoplastic_process",
    "C16.131": "congenital_abnormality",
    "C21": "injury_or_poisoning",
    "C23": "pathologic_function",
    "C23.888": "sign_or_symptom",
    "C25": "injury_or_poisoning",
    "C26": "injury_or_poisoning",
    "D": "chemical",
    "D01": "inorganic_chemical",
    "D01.268": "element_ion_or_isotope",
    "D02": "organic_chemical",
    "D03": "organic_chemical",
    "D04": "organic_chemical",
    "D04.210.500": "steroid",
    "D05": "chemical_viewed_structurally",
    "D06": "hormone",
    "D08": "enzyme",
    "D09": "carbohydrate",
    "D10": "lipid",
    "D12": "amino_acid_peptide_or_protein",
    "D13": "nucleic_acid_nucleoside_or_nucleotide",
    "D20": "substance",
    "D23": "biologically_active_substance",
    "D25": "biomedical_or_dental_material",
    "D26": "pharmacologic_substance",
    "D27": "chemical_viewed_functionally",
    "D27.505": "pharmacologic_substance",
    "D27.888": "hazardous_or_poisonous_substance",
    "E": "therapeutic_or_preventive_procedure",
    "E01": "diagnostic_procedure",
    "E05": "laboratory_procedure",
    "F01": "behavior",
    "F02": "mental_process",
    "F03": "mental_or_behavioral_dysfunction",
    "G": "phenomenon_or_process",
    "M01": "population_group",
    "N": "health_care_activity",
}

# UMLS semantic type ids (MRSTY) of the types above and a few more
TUI_SEMANTIC_TYPES: Dict[str, str] = {
    "T017": "anatomical_structure", "T001": "organism", "T047": "disease_or_syndrome",
    "T191": "neoplastic_process", "T019": "congenital_abnormality", "T037": "injury_or_poisoning",
    "T046": "pathologic_function", "T184": "sign_or_symptom", "T048": "mental_or_behavioral_dysfunction",
    "T020": "acquired_abnormality", "T190": "anatomical_abnormality", "T033": "finding",
    "T049": "cell_or_molecular_dysfunction", "T050": "experimental_model_of_disease",
    "T103": "chemical", "T104": "chemical_viewed_structurally", "T120": "chemical_viewed_functionally",
    "T109": "organic_chemical", "T197": "inorganic_chemical", "T196": "element_ion_or_isotope",
    "T110": "steroid", "T125": "hormone", "T126": "enzyme", "T118": "carbohydrate", "T119": "lipid",
    "T116": "amino_acid_peptide_or_protein", "T114": "nucleic_acid_nucleoside_or_nucleotide",
    "T167": "substance", "T123": "biologically_active_substance", "T122": "biomedical_or_dental_material",
    "T121": "pharmacologic_substance", "T131": "hazardous_or_poisonous_substance", "T195": "antibiotic",
    "T127": "vitamin", "T129": "immunologic_factor", "T130": "indicator_reagent_or_diagnostic_aid",
    "T124": "neuroreactive_substance_or_biogenic_amine", "T111": "eicosanoid", "T115": "organophosphorus_compound",
    "T200": "clinical_drug", "T192": "receptor", "T061": "therapeutic_or_preventive_procedure",
    "T060": "diagnostic_procedure", "T059": "laboratory_procedure", "T053": "behavior",
    "T041": "mental_process", "T098": "population_group", "T058": "health_care_activity",
    "T067": "phenomenon_or_process", "T034": "laboratory_or_test_result",
}

CATEGORY_SEMANTIC_TYPES = {CHEMICAL: "chemical", DISEASE: "disease_or_syndrome"}


@dataclass
class KnowledgeGraph:
    """Triples (head, relation, tail) with counts of what each source gave and dropped."""

    triples: List[Triple] = field(default_factory=list)
    sources: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def stats(self, kb: Optional[KnowledgeBase] = None) -> Dict[str, object]:
        """Counts per relation, entities, KB concepts covered, and the per-source counts."""
        relations = Counter(r for _, r, _ in self.triples)
        entities: Set[str] = set()
        for h, _, t in self.triples:
            entities.add(h)
            entities.add(t)
        out: Dict[str, object] = {
            "format": STATS_FORMAT,
            "triples": len(self.triples),
            "entities": len(entities),
            "relations": dict(sorted(relations.items(), key=lambda x: (-x[1], x[0]))),
            "sources": self.sources,
        }
        if kb is not None:
            concepts = sum(1 for e in entities if e in kb)
            out["kb_concepts"] = len(kb)
            out["kb_concepts_in_graph"] = concepts
            out["kb_coverage"] = round(concepts / len(kb), 4) if len(kb) else 0.0
        return out

    def to_disk(self, out_dir: Union[str, Path], kb: Optional[KnowledgeBase] = None) -> Dict[str, object]:
        """Write `triples.tsv` and `stats.json` into `out_dir`; return the stats."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_triples(out_dir / "triples.tsv", self.triples)
        stats = self.stats(kb)
        srsly.write_json(out_dir / "stats.json", stats)
        return stats


def write_triples(path: Union[str, Path], triples: Iterable[Triple]) -> None:
    """A three-column TSV without header (PyKEEN's triples format)."""
    lines = []
    for triple in triples:
        if any(not part or "\t" in part or "\n" in part for part in triple):
            raise ValueError(f"invalid triple {triple!r}: empty part or tab/newline inside")
        lines.append("\t".join(triple))
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf8")


def read_triples(path: Union[str, Path]) -> List[Triple]:
    """Triples from a three-column TSV; a malformed line raises an error naming file and line."""
    out: List[Triple] = []
    for line_no, line in iter_lines(path):
        cols = line.split("\t")
        if len(cols) != 3 or not all(c.strip() for c in cols):
            raise VocabularyError(path, line_no, f"expected 3 non-empty tab-separated columns (head, relation, tail), found {line!r}")
        out.append((cols[0].strip(), cols[1].strip(), cols[2].strip()))
    return out


# ---- sources -----------------------------------------------------------------------------
def mesh_isa_triples(terms: Union[str, Path], tree_numbers: Union[str, Path]) -> Iterator[Triple]:
    """(child, `isa`, parent) for each MeSH tree number whose parent number is a descriptor."""
    concepts = list(read_mesh(terms, tree_numbers))
    by_number: Dict[str, str] = {}
    for c in concepts:
        for tn in c.types:
            if TREE_NUMBER.match(tn):
                by_number[tn] = c.concept_id
    seen: Set[Tuple[str, str]] = set()
    for c in concepts:
        for tn in c.types:
            if "." not in tn or not TREE_NUMBER.match(tn):
                continue
            parent = by_number.get(tn.rsplit(".", 1)[0])
            if parent is not None and parent != c.concept_id and (c.concept_id, parent) not in seen:
                seen.add((c.concept_id, parent))
                yield (c.concept_id, ISA, parent)


def medic_parent_triples(path: Union[str, Path]) -> Iterator[Triple]:
    """(disease, `medic_parent`, parent) from the `ParentIDs` column of CTD MEDIC.

    Ids are made bare as in `read_medic` (`MESH:D001` -> `D001`, `OMIM:` kept).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    for cols in _tsv_rows(path, decode(data, path), 8, skip_header=False):
        child = bare_id(cols[1])
        for parent in cols[4].split("|"):
            if parent.strip():
                yield (child, MEDIC_PARENT, bare_id(parent.strip()))


def mesh_action_triples(path: Union[str, Path]) -> Iterator[Triple]:
    """(substance, `has_pharmacological_action`, action descriptor) from a MeSH
    pharmacological actions table (`DescriptorUI`, ..., `PharmActionUI`, ...)."""
    for substance, action in mesh_action_pairs(path):
        yield (substance, HAS_PHARMACOLOGICAL_ACTION, action)


def relation_triples(docbins: Iterable[Union[str, Path]], label: str = "CID", relation: str = INDUCES, vocab: Optional[Vocab] = None) -> Iterator[Triple]:
    """(head id, `relation`, tail id) for the `label` records in `doc._.medllm_rels`.

    Use training splits only. A composite id (`D1|D2`) gives one triple per id pair.
    """
    install_extensions()
    vocab = vocab if vocab is not None else Vocab()
    for path in docbins:
        path = Path(path)
        if path.stem in ("dev", "test") or "dev" in path.stem.split("_") or "test" in path.stem.split("_"):
            warnings.warn(f"{path}: relations from a dev or test split in the graph leak the evaluation; use training splits only")
        if not path.exists():
            raise FileNotFoundError(f"{path}: file not found")
        for doc in DocBin(store_user_data=True).from_disk(path).get_docs(vocab):
            for r in get_relations(doc):
                if r.get("label") != label:
                    continue
                for h in split_kb_id(str(r.get("head_id") or "")):
                    for t in split_kb_id(str(r.get("tail_id") or "")):
                        yield (h, relation, t)


def semantic_network_triples() -> Iterator[Triple]:
    """The UMLS semantic network shipped inside PyKEEN: (`semtype:<a>`, `semnet:<rel>`, `semtype:<b>`).

    All three of PyKEEN's splits are used: this graph is trained on its own, and the
    UMLS benchmark that anchors the TransE numbers is a separate model.
    """
    for path in umls_paths():
        for line_no, line in iter_lines(path):
            cols = line.split("\t")
            if len(cols) != 3:
                raise VocabularyError(path, line_no, "expected 3 tab-separated columns")
            yield (SEMTYPE_PREFIX + cols[0], SEMNET_PREFIX + cols[1], SEMTYPE_PREFIX + cols[2])


def umls_paths() -> List[Path]:
    """The train / valid / test files of PyKEEN's UMLS data set, found without importing pykeen
    (an import is slow and creates PyKEEN's data folder)."""
    spec = importlib.util.find_spec("pykeen")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("pykeen is not installed: pip install pykeen (or build the graph with semantic_network=False)")
    folder = Path(spec.origin).parent / "datasets" / "umls"
    return [folder / f"{name}.txt" for name in ("train", "valid", "test")]


def semantic_types_of(types: Iterable[str]) -> List[str]:
    """UMLS semantic type names for a concept's KB types: tree numbers, then TUIs, then categories."""
    out: List[str] = []
    types = list(types)
    for t in types:
        tn = t.split("/", 1)[0]  # MEDIC writes supplementary records as "C16.131.260/C538288"
        if TREE_NUMBER.match(tn):
            st = _longest_prefix(tn)
            if st is not None and st not in out:
                out.append(st)
        elif t in TUI_SEMANTIC_TYPES and TUI_SEMANTIC_TYPES[t] not in out:
            out.append(TUI_SEMANTIC_TYPES[t])
    if not out:
        out = [CATEGORY_SEMANTIC_TYPES[t] for t in types if t in CATEGORY_SEMANTIC_TYPES]
    return list(dict.fromkeys(out))


def _longest_prefix(tree_number: str) -> Optional[str]:
    parts = tree_number.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in TREE_SEMANTIC_TYPES:
            return TREE_SEMANTIC_TYPES[prefix]
    return TREE_SEMANTIC_TYPES.get(tree_number[:1])


def semantic_type_triples(kb: KnowledgeBase, known_types: Set[str]) -> Iterator[Triple]:
    """(concept, `has_semantic_type`, `semtype:<name>`) for each KB concept whose types map to one in `known_types`."""
    for concept in kb:
        for st in semantic_types_of(concept.types):
            if st in known_types:
                yield (concept.concept_id, HAS_SEMANTIC_TYPE, SEMTYPE_PREFIX + st)


# ---- the whole graph ---------------------------------------------------------------------
def build_kg(
    kb: KnowledgeBase,
    mesh_dir: Optional[Union[str, Path]] = None,
    medic: Optional[Union[str, Path]] = None,
    relation_files: Iterable[Union[str, Path]] = (),
    semantic_network: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    mesh_actions: Optional[Union[str, Path]] = None,
) -> KnowledgeGraph:
    """Collect the triples of all sources over the concepts of `kb`.

    kb (KnowledgeBase): the concepts; edges with an end outside it are dropped (counted).
    mesh_dir (Path): folder with MeSH `terms.tsv` and `tree-numbers.tsv`.
    medic (Path): CTD MEDIC `CTD_diseases.tsv(.gz)`.
    relation_files (Iterable[Path]): training-split `.spacy` files with CID records.
    semantic_network (bool): add PyKEEN's UMLS semantic network and the concept types.
    progress (Callable[[str], None]): called with the name of each source as it starts.
    mesh_actions (Path): MeSH pharmacological actions table (`has_pharmacological_action`).
    RETURNS (KnowledgeGraph): the deduplicated triples and per-source counts.
    """
    graph = KnowledgeGraph()
    seen: Set[Triple] = set()
    pairs_isa: Set[Tuple[str, str]] = set()

    def add(source: str, triples: Iterable[Triple], in_kb: Callable[[str], bool]) -> None:
        counts = graph.sources.setdefault(source, Counter())
        for h, r, t in triples:
            counts["read"] += 1
            ph, pt = kb.resolve(h) or h, kb.resolve(t) or t
            if (ph, pt) != (h, t):
                counts["mapped_to_primary_id"] += 1
                h, t = ph, pt
            if not (in_kb(h) and in_kb(t)):
                counts["dropped_not_in_kb"] += 1
                continue
            if h == t:
                counts["dropped_self_loop"] += 1
                continue
            if r == MEDIC_PARENT and (h, t) in pairs_isa:
                counts["dropped_same_as_isa"] += 1
                continue
            if (h, r, t) in seen:
                counts["dropped_duplicate"] += 1
                continue
            seen.add((h, r, t))
            if r == ISA:
                pairs_isa.add((h, t))
            graph.triples.append((h, r, t))
            counts["kept"] += 1

    def note(source: str) -> None:
        logger.info("knowledge graph: %s", source)
        if progress is not None:
            progress(source)

    def is_concept(x: str) -> bool:
        return x in kb

    if mesh_dir is not None:
        note("MeSH tree")
        mesh_dir = Path(mesh_dir)
        add("mesh_isa", mesh_isa_triples(mesh_dir / "terms.tsv", mesh_dir / "tree-numbers.tsv"), is_concept)
    if medic is not None:
        note("CTD MEDIC parents")
        add("medic_parent", medic_parent_triples(medic), is_concept)
    relation_files = list(relation_files)
    if relation_files:
        note("BC5CDR CID relations")
        add("cid_relations", relation_triples(relation_files), is_concept)
    if mesh_actions is not None:
        note("MeSH pharmacological actions")
        add("mesh_pharmacological_actions", mesh_action_triples(mesh_actions), is_concept)
    if semantic_network:
        note("UMLS semantic network")
        network = list(semantic_network_triples())
        known = {e[len(SEMTYPE_PREFIX):] for h, _, t in network for e in (h, t)}
        add("semantic_network", network, lambda x: x.startswith(SEMTYPE_PREFIX))
        add("semantic_types", semantic_type_triples(kb, known), lambda x: x in kb or x.startswith(SEMTYPE_PREFIX))
    graph.sources = {k: dict(v) for k, v in graph.sources.items()}
    return graph
