"""The knowledge base: concepts with canonical names, aliases, types and definitions.

The same data model as scispaCy's `KnowledgeBase` (concept id, canonical name,
aliases, types, definition), stored as one msgpack file of parallel columns: no
pickle, and a MeSH + MEDIC knowledge base of ~40k concepts loads in well under a
second. The file carries a format name and version; a file from a newer version
is refused with a clear error instead of being misread.

Format version 2 adds, each optional: a concept's alternative ids (`alt_ids`: the other
ids of the same concept, e.g. the 2024 MeSH descriptor a 2015 supplementary record
became; see `spacy_medllm.kb.ids`), the source of each name (`name_sources`: an index
into `sources`, parallel to `Concept.names`), and `sources`: every vocabulary the
knowledge base was built from, with its licence and what that allows. Version 1 files
still load (no alternative ids, sources unknown).
"""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import srsly

from ..errors import Errors
from ..io import msgpack_loads, no_cyclic_gc

KB_FORMAT = "spacy_medllm.kb"
KB_VERSION = 2
KB_FILE = "kb.msgpack"


@dataclass
class Concept:
    """One concept: id, canonical name, other names, types, definition.

    alt_ids: other ids of the same concept (`concept_id` is the primary one, the id
        the linker answers with). sources: name -> the source that first gave it
        (a key of `KnowledgeBase.sources`); a name without an entry has no known source.
    """

    concept_id: str
    canonical_name: str
    aliases: List[str] = field(default_factory=list)
    types: List[str] = field(default_factory=list)
    definition: Optional[str] = None
    alt_ids: List[str] = field(default_factory=list)
    sources: Dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> List[str]:
        """The canonical name first, then the aliases, without duplicates."""
        return list(dict.fromkeys([self.canonical_name] + self.aliases))


def _as_list(value) -> list:
    return value if type(value) is list else list(value)


def normalize_alias(text: str) -> str:
    """The key used for exact alias lookup: case- and whitespace-insensitive."""
    return " ".join(text.lower().split())


# British spellings of medical and chemical words and their American forms (MeSH's), as
# substrings of a normalized name: "anaemia", "oedema", "hypokalaemia", "oestrogens",
# "brain tumour", "leucopenia", "sulphate". Only a lookup that finds nothing as written
# tries the American form (so "leucine" stays "leucine").
US_SPELLINGS = (
    ("aem", "em"), ("oedem", "edem"), ("oesoph", "esoph"), ("oestr", "estr"), ("foet", "fet"),
    ("rrhoea", "rrhea"), ("noea", "nea"), ("coeliac", "celiac"), ("amoeb", "ameb"), ("paed", "ped"),
    ("anaes", "anes"), ("gynaec", "gynec"), ("tumour", "tumor"), ("sulph", "sulf"), ("leuc", "leuk"),
    ("aluminium", "aluminum"), ("caesium", "cesium"),
)


def us_spelling(key: str) -> str:
    """A normalized name with British spellings replaced by American ones (`US_SPELLINGS`)."""
    for uk, us in US_SPELLINGS:
        if uk in key:
            key = key.replace(uk, us)
    return key


class KnowledgeBase:
    """Concepts by id, with an exact (normalized) alias index."""

    def __init__(self, concepts: Iterable[Concept] = ()):
        self._concepts: Dict[str, Concept] = {}
        self._alias_index: Optional[Dict[str, Tuple[str, ...]]] = None
        # `fingerprint()`, kept until the KB changes (each index checks it at load)
        self._fingerprint: Optional[str] = None
        self._alt: Dict[str, str] = {}  # alternative id -> primary id
        # the vocabularies this KB was built from, in layering order: name, licence, ...
        self.sources: List[Dict[str, object]] = []
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

    def add(self, concept: Concept, source: Optional[str] = None) -> None:
        """Add a concept, or merge it into the concept with the same id.

        Merging keeps the first canonical name and definition, and adds the new names
        and types, so sources can be layered (MeSH names, then MEDIC synonyms, then
        training-set mentions). A concept whose id is another concept's alternative id
        is merged into that concept.

        source (str): the source of the concept's names (a key of `sources`), recorded
            for each name that is new; otherwise `concept.sources` is used.
        """
        self._changed()
        cid = self._alt.get(concept.concept_id, concept.concept_id)
        old = self._concepts.get(cid)
        if old is None:
            aliases = [a for a in dict.fromkeys(concept.aliases) if a and a != concept.canonical_name]
            new = Concept(cid, concept.canonical_name, aliases, list(dict.fromkeys(concept.types)), concept.definition)
            self._concepts[cid] = new
            for name in new.names:
                origin = source or concept.sources.get(name)
                if origin:
                    new.sources[name] = origin
            for alt in concept.alt_ids:
                self._add_alt(new, alt)
            return
        known = set(old.names)
        for name in [concept.canonical_name] + list(concept.aliases):
            if name and name not in known:
                old.aliases.append(name)
                known.add(name)
                origin = source or concept.sources.get(name)
                if origin:
                    old.sources[name] = origin
        old.types.extend(t for t in concept.types if t not in old.types)
        if old.definition is None:
            old.definition = concept.definition
        for alt in ([concept.concept_id] if concept.concept_id != cid else []) + list(concept.alt_ids):
            self._add_alt(old, alt)

    def _add_alt(self, concept: Concept, alt: str) -> None:
        if alt and alt != concept.concept_id and alt not in concept.alt_ids and alt not in self._concepts:
            concept.alt_ids.append(alt)
            self._alt[alt] = concept.concept_id

    def merge(self, primary_id: str, other_id: str) -> None:
        """Make `other_id` an alternative id of the concept `primary_id`: the other
        concept's names (with their sources), types, definition and alternative ids move
        into it and the other concept is removed; both must be primary ids."""
        primary, other = self._concepts[primary_id], self._concepts.pop(other_id)
        self._changed()
        known = set(primary.names)
        for name in other.names:
            if name not in known:
                primary.aliases.append(name)
                known.add(name)
                if name in other.sources:
                    primary.sources[name] = other.sources[name]
        primary.types.extend(t for t in other.types if t not in primary.types)
        if primary.definition is None:
            primary.definition = other.definition
        for alt in [other_id] + other.alt_ids:
            self._add_alt(primary, alt)

    def remove(self, concept_id: str) -> Concept:
        """Remove the concept with this primary id (and its alternative ids); return it."""
        concept = self._concepts.pop(concept_id)
        self._changed()
        for alt in concept.alt_ids:
            self._alt.pop(alt, None)
        return concept

    def resolve(self, concept_id: str) -> Optional[str]:
        """The primary id of the concept that has `concept_id` as its id or as an
        alternative id; None when no concept has it. (`in` and `[]` take primary ids only.)"""
        if concept_id in self._concepts:
            return concept_id
        return self._alt.get(concept_id)

    def ids_of(self, concept_id: str) -> List[str]:
        """All ids of the concept with this (primary or alternative) id, primary first; [] if none."""
        primary = self.resolve(concept_id)
        return [] if primary is None else [primary] + self._concepts[primary].alt_ids

    def add_source(self, name: str, **info: object) -> None:
        """Record a source of this KB (its licence, what it allows, counts) under `name`;
        a source recorded again is updated."""
        for entry in self.sources:
            if entry["name"] == name:
                entry.update(info)
                return
        self.sources.append({"name": name, **info})

    def _changed(self) -> None:
        """Drop what is derived from the concepts and their names (rebuilt when next asked)."""
        self._alias_index = None
        self._fingerprint = None

    def fingerprint(self) -> str:
        """A hash of what an index is built from: the concept ids and their names, in order.
        Computed once until the KB changes (`add`, `merge`, `remove`): a pipeline's TF-IDF and
        dense indexes both check it when they load."""
        if self._fingerprint is None:
            self._fingerprint = self._hash_names()
        return self._fingerprint

    def _hash_names(self) -> str:
        h = hashlib.sha256()
        for concept in self._concepts.values():
            h.update(concept.concept_id.encode("utf8") + b"\x00")
            for name in concept.names:
                h.update(normalize_alias(name).encode("utf8") + b"\x01")
            h.update(b"\x02")
        return h.hexdigest()

    @property
    def alias_index(self) -> Dict[str, Tuple[str, ...]]:
        """Normalized name -> ids of the concepts that have it (a tuple: tuples of strings
        leave the cyclic garbage collector's view, where ~10^5 lists would be traversed by
        every full collection for as long as the KB lives)."""
        if self._alias_index is None:
            # built as tuples from the start, the names of one concept sharing one, and a
            # key that is already normalized is the name's own string: no per-key list or
            # copy is made and freed (~180k names: 29 MB, and a build peak of 56 MB with lists)
            index: Dict[str, Tuple[str, ...]] = {}
            with no_cyclic_gc():
                for concept in self._concepts.values():
                    own = (concept.concept_id,)
                    for name in concept.names:
                        key = normalize_alias(name)
                        if key == name:
                            key = name
                        ids = index.get(key)
                        if ids is None:
                            index[key] = own
                        elif concept.concept_id not in ids:
                            index[key] = ids + own
                self._alias_index = index
        return self._alias_index

    def lookup(self, text: str) -> List[str]:
        """Ids of the concepts with exactly this name (after normalization)."""
        return list(self.alias_index.get(normalize_alias(text), []))

    def lookup_spellings(self, text: str) -> List[str]:
        """`lookup`, and where nothing has the name as written, the concepts with its American
        spelling ("anaemia" -> Anemia, "oedema" -> Edema, "oestrogens" -> Estrogens)."""
        return self.lookup(text) or self.lookup(us_spelling(normalize_alias(text)))

    def to_bytes(self) -> bytes:
        concepts = list(self._concepts.values())
        sources = [dict(s) for s in self.sources]
        position = {s["name"]: i for i, s in enumerate(sources)}
        for c in concepts:
            for origin in c.sources.values():
                if origin not in position:  # a name from a source nobody recorded
                    position[origin] = len(sources)
                    sources.append({"name": origin})
        return srsly.msgpack_dumps(
            {
                "format": KB_FORMAT,
                "version": KB_VERSION,
                "ids": [c.concept_id for c in concepts],
                "names": [c.canonical_name for c in concepts],
                "aliases": [c.aliases for c in concepts],
                "types": [c.types for c in concepts],
                "definitions": [c.definition for c in concepts],
                "alt_ids": [c.alt_ids for c in concepts],
                "name_sources": [[position[c.sources[n]] if n in c.sources else -1 for n in c.names] for c in concepts],
                "sources": sources,
                # what an index checks this KB by (`fingerprint`), hashed afresh here (a
                # concept's names may have been edited in place) and taken as saved at
                # load, not hashed again over every name (~0.3 s of a pipeline's load)
                "fingerprint": self._hash_names(),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "KnowledgeBase":
        # the cyclic garbage collector, triggered again and again by ~10^5 new lists,
        # dicts and concepts, would take most of the load time; none of them is garbage.
        # It is switched off after decoding: msgpack's unpacker switches it back on as it
        # returns (switched off before the decoding, it made the KB load 0.51 s, not 0.15).
        try:
            msg = msgpack_loads(data)
        except Exception as err:
            raise ValueError(Errors.E010.format(path=source, reason=f"not msgpack ({err})")) from None
        with no_cyclic_gc():
            return cls._from_message(msg, source)

    @classmethod
    def _from_message(cls, msg: object, source: str) -> "KnowledgeBase":
        if not isinstance(msg, dict) or msg.get("format") != KB_FORMAT:
            raise ValueError(Errors.E010.format(path=source, reason=f"not a {KB_FORMAT} file"))
        version = msg.get("version")
        if not isinstance(version, int) or version > KB_VERSION:
            raise ValueError(Errors.E011.format(path=source, version=version, supported=KB_VERSION))
        columns = ("ids", "names", "aliases", "types", "definitions")
        if any(not isinstance(msg.get(c), (list, tuple)) for c in columns) or len({len(msg[c]) for c in columns}) != 1:
            raise ValueError(Errors.E010.format(path=source, reason="columns missing or of different lengths"))
        n = len(msg["ids"])
        # version 2 columns, absent from version 1 files
        alt_ids = msg["alt_ids"] if "alt_ids" in msg else [[] for _ in range(n)]  # one list each: they are kept
        name_sources = msg.get("name_sources", [[]] * n)
        sources = msg.get("sources", [])
        if not isinstance(alt_ids, (list, tuple)) or not isinstance(name_sources, (list, tuple)) or len(alt_ids) != n or len(name_sources) != n:
            raise ValueError(Errors.E010.format(path=source, reason="columns missing or of different lengths"))
        if not isinstance(sources, (list, tuple)) or any(not isinstance(s, dict) or not isinstance(s.get("name"), str) for s in sources):
            raise ValueError(Errors.E010.format(path=source, reason="'sources' is not a list of {name: ...} records"))
        source_names = [s["name"] for s in sources]
        kb = cls()
        kb.sources = [dict(s) for s in sources]
        for cid, name, aliases, types, definition, alts, origins in zip(*(msg[c] for c in columns), alt_ids, name_sources):
            # the decoded lists themselves (copies would leave the originals' memory freed
            # but fragmented: the KB's resident size is what a pipeline's load pays)
            concept = Concept(cid, name, _as_list(aliases), _as_list(types), definition, _as_list(alts))
            for text, i in zip(concept.names, origins):
                if isinstance(i, int) and 0 <= i < len(source_names):
                    concept.sources[text] = source_names[i]
                elif i != -1:
                    raise ValueError(Errors.E010.format(path=source, reason=f"concept {cid}: name source {i!r} is not an index into 'sources'"))
            kb._concepts[cid] = concept
        for concept in kb._concepts.values():
            for alt in concept.alt_ids:
                kb._alt[alt] = concept.concept_id
        saved = msg.get("fingerprint")
        if isinstance(saved, str) and len(saved) == 64:
            kb._fingerprint = saved
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
