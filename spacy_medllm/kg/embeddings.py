"""The entity embedding table: one row per knowledge graph entity, keyed by concept id.

Stored as a folder of three files, all safe to load (no pickle):

    embeddings.npy   float32 array (entities, dimension), read with allow_pickle=False
    ids.json         the entity ids (KB concept ids, plus graph-only nodes), row order
    meta.json        {"format", "version", "model", "dimension", "epochs", "metrics", ...}

The meta file carries a format name and version: a table written by a newer
spacy_medllm is refused with a clear error instead of being misread.
"""
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy
import srsly

from ..errors import Errors

EMBEDDINGS_FORMAT = "spacy_medllm.kg_embeddings"
EMBEDDINGS_VERSION = 1
VECTORS_FILE = "embeddings.npy"
IDS_FILE = "ids.json"
META_FILE = "meta.json"


class EmbeddingTable:
    """Entity vectors with their ids and the metadata of the model that made them.

    vectors (numpy.ndarray): float32, shape (len(ids), dimension).
    ids (List[str]): entity ids in row order, unique.
    meta (Dict[str, Any]): model name, dimension, epochs, metrics and anything else JSON-serializable.
    """

    def __init__(self, vectors: numpy.ndarray, ids: Iterable[str], meta: Optional[Dict[str, Any]] = None):
        self.vectors = numpy.ascontiguousarray(vectors, dtype="float32")
        self.ids = list(ids)
        self.meta = dict(meta or {})
        _check(self.vectors, self.ids, "<memory>")
        self._rows: Optional[Dict[str, int]] = None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, entity_id: str) -> bool:
        return entity_id in self.rows

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def rows(self) -> Dict[str, int]:
        """Entity id -> row of `vectors`."""
        if self._rows is None:
            self._rows = {eid: i for i, eid in enumerate(self.ids)}
        return self._rows

    def __getitem__(self, entity_id: str) -> numpy.ndarray:
        return self.vectors[self.rows[entity_id]]

    def to_disk(self, path: Union[str, Path]) -> None:
        """Write embeddings.npy, ids.json and meta.json into the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta)
        meta.update({"format": EMBEDDINGS_FORMAT, "version": EMBEDDINGS_VERSION, "n_entities": len(self.ids), "dimension": self.dimension})
        numpy.save(path / VECTORS_FILE, self.vectors, allow_pickle=False)
        srsly.write_json(path / IDS_FILE, self.ids)
        srsly.write_json(path / META_FILE, meta)

    @classmethod
    def from_disk(cls, path: Union[str, Path]) -> "EmbeddingTable":
        """Load a table written by `to_disk` (or `medllm train-kg`), checking format, version and shapes."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(Errors.E003.format(path=path))
        for name in (META_FILE, IDS_FILE, VECTORS_FILE):
            if not (path / name).exists():
                raise FileNotFoundError(Errors.E003.format(path=path / name))
        meta = _read_json(path / META_FILE)
        if not isinstance(meta, dict) or meta.get("format") != EMBEDDINGS_FORMAT:
            raise ValueError(Errors.E015.format(path=path / META_FILE, reason=f"'format' is not {EMBEDDINGS_FORMAT!r}"))
        version = meta.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(Errors.E015.format(path=path / META_FILE, reason=f"'version' must be an integer, found {version!r}"))
        if version > EMBEDDINGS_VERSION:
            raise ValueError(Errors.E016.format(path=path / META_FILE, version=version, supported=EMBEDDINGS_VERSION))
        ids = _read_json(path / IDS_FILE)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(Errors.E015.format(path=path / IDS_FILE, reason="expected a JSON list of id strings"))
        try:
            vectors = numpy.load(path / VECTORS_FILE, allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:
            # object arrays (which would need pickle), truncated and empty files end up here
            raise ValueError(Errors.E015.format(path=path / VECTORS_FILE, reason=f"not a plain numeric .npy array ({err})")) from None
        if vectors.dtype.kind != "f":
            raise ValueError(Errors.E015.format(path=path / VECTORS_FILE, reason=f"expected floats, found dtype {vectors.dtype}"))
        _check(vectors, ids, str(path))
        if meta.get("dimension") not in (None, vectors.shape[1]):
            raise ValueError(Errors.E015.format(path=path / META_FILE, reason=f"'dimension' is {meta['dimension']} but the vectors have {vectors.shape[1]} columns"))
        return cls(vectors, ids, meta)


def _read_json(path: Path) -> Any:
    try:
        return srsly.read_json(path)
    except ValueError as err:
        raise ValueError(Errors.E015.format(path=path, reason=f"not valid JSON ({err})")) from None


def _check(vectors: numpy.ndarray, ids: List[str], source: str) -> None:
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(Errors.E015.format(path=source, reason=f"expected a 2-d array (entities, dimension), found shape {vectors.shape}"))
    if vectors.shape[0] != len(ids):
        raise ValueError(Errors.E015.format(path=source, reason=f"{vectors.shape[0]} vectors but {len(ids)} ids"))
    if len(set(ids)) != len(ids):
        seen = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(Errors.E015.format(path=source, reason=f"id {dup!r} occurs more than once"))
    if not numpy.isfinite(vectors).all():
        raise ValueError(Errors.E015.format(path=source, reason="the vectors contain NaN or infinite values"))
