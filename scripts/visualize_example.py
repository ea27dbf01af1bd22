"""The README's `medllm visualize` example: two short notes (written for this README, not taken
from a corpus) through the pipeline with medspaCy's ConText chained after it, drawn as a page
and photographed in headless chromium.

    python scripts/visualize_example.py training/medllm_bc5cdr docs/visualize.html docs/visualize.png
"""
import shutil
import subprocess
import sys
from pathlib import Path

import spacy

from spacy_medllm.visualize import doc_view, render_records, write_page

TEXTS = [
    "Naloxone reverses the antihypertensive effect of clonidine.",
    "Lithium carbonate caused nephrotoxicity and acute renal failure in a patient with bipolar disorder. "
    "She denies seizures after cisplatin. Her mother has hypertension.",
]


def main(model: str, html_path: str, png_path: str) -> None:
    import medspacy  # noqa: F401  (registers medspacy_context)

    nlp = spacy.load(model)
    nlp.add_pipe("sentencizer", first=True)
    nlp.add_pipe("medspacy_context", last=True)
    views = [doc_view(doc, f"example {i}") for i, doc in enumerate(nlp.pipe(TEXTS), start=1)]
    write_page(render_records(views, title="medllm visualize", meta=f"pipeline {Path(model).name} + medspaCy ConText"), html_path)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,640",
                    f"--screenshot={Path(png_path).resolve()}", Path(html_path).resolve().as_uri()], check=True, capture_output=True)
    print(f"wrote {html_path} and {png_path}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
