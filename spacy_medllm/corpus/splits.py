"""Fixed, documented document-level splits for corpora published without one."""
import hashlib

from ..errors import Errors


def split_of(doc_key: str, dev: float = 0.1, test: float = 0.1) -> str:
    """"train", "dev" or "test" for a document key, from the SHA-256 of the key.

    The split is a pure function of the key, so it is the same on every machine
    and stays stable when documents are added: the first 8 hex digits of
    sha256(key) give a number u in [0, 1); u < test is "test", u < test + dev is
    "dev", the rest "train". All sentences of one document share its split.
    """
    if dev <= 0 or test <= 0 or dev + test >= 1:
        raise ValueError(Errors.E008.format(dev=dev, test=test))
    u = int(hashlib.sha256(doc_key.encode("utf8")).hexdigest()[:8], 16) / 16**8
    if u < test:
        return "test"
    if u < test + dev:
        return "dev"
    return "train"
