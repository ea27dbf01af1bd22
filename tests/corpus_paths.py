"""Where the real corpora are, and what a test does when they are absent.

The corpus-count tests read the read-only corpora in ../shared/corpus. Locally a missing
corpus skips the test with a reason naming the path; under CI (env CI=true) it fails,
naming the path, so a CI run without the corpora cannot pass silently.
"""
import os
from pathlib import Path

import pytest

SHARED_CORPUS = Path(__file__).parent.parent.parent / "shared" / "corpus"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_corpus(*parts: str) -> Path:
    """The path ../shared/corpus/<parts>; skip (locally) or fail (CI=true) when it is missing."""
    path = SHARED_CORPUS.joinpath(*parts)
    if not path.exists():
        message = f"corpus file {path} not found (the corpus-count tests read ../shared/corpus)"
        if in_ci():
            pytest.fail(f"{message}; CI=true: a missing corpus is a failure", pytrace=False)
        pytest.skip(message)
    return path
