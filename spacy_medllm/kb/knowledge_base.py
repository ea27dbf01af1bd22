"""The knowledge base: concepts with canonical names, aliases, types and definitions.

The same data model as scispaCy's `KnowledgeBase` (concept id, canonical name,
aliases, types, definition), stored as one msgpack file of parallel columns: no
pickle, and a MeSH + MEDIC knowledge base of ~40k concepts loads in well under a
second. The file carries a format name and version; a file from a newer version
is refused with a clear error instead of being misread.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Union

import srsly

from ..errors import Errors

KB_FORMAT = "spacy_medllm.kb"
KB_VERSION = 1
KB_FILE = "kb.msgpack"


@dataclass
class Concept:
    """One concept: id, canonical name, other names, types, definition."""

    concept_id: str
    canonical_name: str
    aliases: List[str] = field(default_factory=list)
    types: List[str] = field(default_factory=list)
    definition: Optional[str] = None

    @property
    def names(self) -> List[str]:
        """The canonical name first, then the aliases, without duplicates."""
        return list(dict.fromkeys([self.canonical_name] + self.aliases))


def normalize_alias(text: str) -> str:
    """The key used for exact alias lookup: case- and whitespace-insensitive."""
    return " ".join(text.lower().split())


class KnowledgeBase:
    """Concepts by id, with an exact (normalized) alias index."""

    def __init__(self, concepts: Iterable[Concept] = ()):
        self._concepts: Dict[str, Concept] = {}
        self._alias_index: Optional[Dict[str, List[str]]] = None
        for concept in concepts:
            self.add(concept)

    def __len__(self) -> int:
        return len(self._concepts)

    def __contains__(self, concept_id: str) -> bool:
        return concept_id in self._concepts

    def __iter__(self) -> Iterator[Concept]:
        return iter(self._concepts.values())

    def __getitem__(self, concept_id: str) -> Concept:
        return self._concepts[concept_id]

    def get(self, concept_id: str) -> Optional[Concept]:
        return self._concepts.get(concept_id)

    def add(self, concept: Concept) -> None:
        """Add a concept, or merge it into the concept with the same id.

        Merging keeps the first canonical name and definition, and adds the new names
        and types, so sources can be layered (MeSH names, then MEDIC synonyms, then
        training-set mentions).
        """
        self._alias_index = None
        old = self._concepts.get(concept.concept_id)
        if old is None:
            aliases = [a for a in dict.fromkeys(concept.aliases) if a and a != concept.canonical_name]
            self._concepts[concept.concept_id] = Concept(
                concept.concept_id, concept.canonical_name, aliases, list(dict.fromkeys(concept.types)), concept.definition
            )
            return
        known = set(old.names)
        for name in [concept.canonical_name] + list(concept.aliases):
            if name and name not in known:
                old.aliases.append(name)
                known.add(name)
        old.types.extend(t for t in concept.types if t not in old.types)
        if old.definition is None:
            old.definition = concept.definition

    @property
    def alias_index(self) -> Dict[str, List[str]]:
        """Normalized name -> ids of the concepts that have it."""
        if self._alias_index is None:
            index: Dict[str, List[str]] = {}
            for concept in self._concepts.values():
                for name in concept.names:
                    ids = index.setdefault(normalize_alias(name), [])
                    if concept.concept_id not in ids:
                        ids.append(concept.concept_id)
            self._alias_index = index
        return self._alias_index

    def lookup(self, text: str) -> List[str]:
        """Ids of the concepts with exactly this name (after normalization)."""
        return list(self.alias_index.get(normalize_alias(text), []))

    def to_bytes(self) -> bytes:
        concepts = list(self._concepts.values())
        return srsly.msgpack_dumps(
            {
                "format": KB_FORMAT,
                "version": KB_VERSION,
                "ids": [c.concept_id for c in concepts],
                "names": [c.canonical_name for c in concepts],
                "aliases": [c.aliases for c in concepts],
                "types": [c.types for c in concepts],
                "definitions": [c.definition for c in concepts],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "KnowledgeBase":
        try:
            msg = srsly.msgpack_loads(data)
        except Exception as err:
            raise ValueError(Errors.E010.format(path=source, reason=f"not msgpack ({err})")) from None
        if not isinstance(msg, dict) or msg.get("format") != KB_FORMAT:
            raise ValueError(Errors.E010.format(path=source, reason=f"not a {KB_FORMAT} file"))
        version = msg.get("version")
        if not isinstance(version, int) or version > KB_VERSION:
            raise ValueError(Errors.E011.format(path=source, version=version, supported=KB_VERSION))
        columns = ("ids", "names", "aliases", "types", "definitions")
        if any(not isinstance(msg.get(c), (list, tuple)) for c in columns) or len({len(msg[c]) for c in columns}) != 1:
            raise ValueError(Errors.E010.format(path=source, reason="columns missing or of different lengths"))
        kb = cls()
        kb._concepts = {
            cid: Concept(cid, name, list(aliases), list(types), definition)
            for cid, name, aliases, types, definition in zip(*(msg[c] for c in columns))
        }
        return kb

    def to_disk(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (KB_FILE + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path / KB_FILE)

    @classmethod
    def from_disk(cls, path: Union[str, Path]) -> "KnowledgeBase":
        path = Path(path)
        file = path / KB_FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(Errors.E003.format(path=file))
        return cls.from_bytes(file.read_bytes(), str(file))
