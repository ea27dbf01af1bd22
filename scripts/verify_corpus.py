"""Check the SHA-256 of the corpus files named in project.yml.

Usage: python scripts/verify_corpus.py <corpus_dir>
Exits 1 and names every missing or changed file.
"""
import hashlib
import re
import sys
from pathlib import Path

import srsly


def main(corpus_dir: str) -> int:
    project = srsly.read_yaml(Path(__file__).parent.parent / "project.yml")
    bad = 0
    for asset in project["assets"]:
        rel = asset["dest"].replace("${vars.corpus_dir}/", "")
        path = Path(corpus_dir) / rel
        want = re.search(r"sha256 ([0-9a-f]{64})", asset.get("description", ""))
        if want is None:
            continue
        if not path.exists():
            print(f"MISSING  {path}")
            bad += 1
            continue
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        status = "ok" if got == want.group(1) else "CHANGED"
        bad += status != "ok"
        print(f"{status:8} {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
