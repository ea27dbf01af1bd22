"""Reading input files: whole texts, numbered lines, decoding, and the malformed-input errors.

The corpus readers, the knowledge base builders and the knowledge graph builders read
their files through these helpers, so that a missing file, a wrong encoding or a
malformed line is reported the same way everywhere: by file, line and reason. Each part
raises its own subclass of `FileFormatError` (`spacy_medllm.corpus.base.CorpusError` for a
corpus, `VocabularyError` for a vocabulary, a knowledge base source or a graph file).
"""
import gc
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Tuple, Type, Union

import srsly

from .errors import Errors


class FileFormatError(ValueError):
    """Malformed input file; the message names the file, the line and the reason."""

    def __init__(self, path: Union[str, Path], line: Optional[int], reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(Errors.E001.format(path=path, line=line if line is not None else "-", reason=reason))


class VocabularyError(FileFormatError):
    """Malformed vocabulary, knowledge base source or knowledge graph file (MeSH, MEDIC,
    UMLS, scispaCy KB files, DrugCentral, PharmGKB, triples); the message names the file,
    the line and the reason."""


def read_text(path: Union[str, Path], encoding: str = "utf-8", *, error: Type[FileFormatError] = FileFormatError) -> str:
    """Read a whole file, with a clear error for a missing file or a wrong encoding.

    error (Type[FileFormatError]): the class raised for a wrong encoding.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    return decode(path.read_bytes(), path, encoding, error=error)


def iter_lines(path: Union[str, Path], *, error: Type[FileFormatError] = FileFormatError) -> Iterable[Tuple[int, str]]:
    """(line number, line without its line break) for the non-blank lines of a UTF-8 file."""
    for line_no, line in enumerate(read_text(path, error=error).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield line_no, line


def decode(data: bytes, path: Union[str, Path], encoding: str = "utf-8", *, error: Type[FileFormatError] = FileFormatError) -> str:
    """`data` as text; a wrong encoding raises `error` naming the file and the line."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise error(
            path, line, f"not valid {encoding} at byte {err.start} ({err.reason}); re-encode the file as UTF-8"
        ) from None


def swap_dir(tmp: Union[str, Path], target: Union[str, Path]) -> None:
    """Put the finished folder `tmp` at `target`. An existing `target` is moved aside first and
    removed only once `tmp` is in place: an interruption leaves one of them whole."""
    tmp, target = Path(tmp), Path(target)
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(output: Union[str, Path], save_model: Callable[[Path], None], optimizer, scheduler, state: dict) -> None:
    """A training run's OUTPUT/checkpoint: what `save_model(folder)` writes, optimizer.pt
    (optimizer and scheduler state, tensors only: read back with weights_only=True) and
    state.json, swapped in whole (`swap_dir`)."""
    import srsly
    import torch

    output = Path(output)
    tmp = output / "checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    srsly.write_json(tmp / "state.json", state)
    swap_dir(tmp, output / "checkpoint")


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off inside the block, as it was after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def msgpack_loads(data: bytes) -> object:
    """`srsly.msgpack_loads`, leaving the cyclic garbage collector as it found it: msgpack's
    unpacker switches it on as it returns, whatever its state before."""
    enabled = gc.isenabled()
    try:
        return srsly.msgpack_loads(data)
    finally:
        if not enabled:
            gc.disable()
