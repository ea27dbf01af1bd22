"""`nlp.pipe(n_process=2)` after the parent ran the pipeline once, with torch on two threads.

Forked workers used to hang once the parent had run torch on more than one thread (its
OpenMP pool is not in the child). Each check runs in its own Python process, with torch
set to two threads there whatever OMP_NUM_THREADS says, and is killed (with its workers)
after TIMEOUT seconds, so a hang fails the test instead of stalling the suite.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_medllm.tokens import get_relations, install_extensions

TIMEOUT = 120

SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(2)
import spacy
try:
    import scispacy.abbreviation  # noqa: F401  (registers abbreviation_detector)
except ImportError:
    pass
from spacy_medllm.tokens import get_relations

nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2])

def view(doc):
    return {
        "ents": [[e.text, e.label_, e.kb_id_, e._.kb_candidates if e.has_extension("kb_candidates") else None] for e in doc.ents],
        "rels": get_relations(doc),
    }

single = [view(nlp(t)) for t in texts]  # the warm call: torch runs in the parent first
piped = [view(d) for d in nlp.pipe(texts, batch_size=2, n_process=2)]
print(json.dumps({"threads": torch.get_num_threads(), "single": single, "piped": piped}))
'''


def run_guarded(model: Path, texts, tmp_path: Path) -> dict:
    script = tmp_path / "run_pipe.py"
    script.write_text(SCRIPT, encoding="utf8")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(model), json.dumps(texts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and the workers it forked
        proc.communicate()
        pytest.fail(f"nlp.pipe(n_process=2) did not finish within {TIMEOUT} s (hung workers?)")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def linker_model(tmp_path_factory) -> Path:
    """entity_ruler -> scispaCy's abbreviation detector (serializable, as n_process needs)
    -> a trained medllm_linker."""
    pytest.importorskip("scispacy")
    import scispacy.abbreviation  # noqa: F401

    from test_linker import CONCEPTS, TRAIN, gold_doc

    from spacy_medllm.kb import KnowledgeBase

    fix_random_seed(0)
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    nlp.add_pipe("abbreviation_detector", config={"make_serializable": True})
    nlp.add_pipe("medllm_linker").set_kb(KnowledgeBase(CONCEPTS))
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(100):
        nlp.update(examples, sgd=optimizer, losses={}, exclude=["entity_ruler", "abbreviation_detector"])
    ruler.add_patterns([{"label": "Chemical", "pattern": [{"LOWER": w}]} for w in ("naloxone", "clonidine")]
                       + [{"label": "Disease", "pattern": [{"LOWER": w}]} for w in ("hypotensive", "lbp")]
                       + [{"label": "Disease", "pattern": [{"LOWER": "cold"}]}])
    path = tmp_path_factory.mktemp("linker") / "nlp"
    nlp.to_disk(path)
    return path


LINKER_TEXTS = [
    "Naloxone worsened the hypotensive state after clonidine .",
    "Low blood pressure ( LBP ) followed clonidine ; LBP resolved .",
    "The patient caught a cold after the rain .",
    "Nothing here .",
] * 2


@pytest.mark.filterwarnings("ignore:.*W036")  # scispaCy's detector, on a text without definitions
def test_linker_n_process_after_a_warm_call(linker_model, tmp_path):
    got = run_guarded(linker_model, LINKER_TEXTS, tmp_path)
    assert got["threads"] == 2
    assert got["piped"] == got["single"]
    assert [[(t, label, kb) for t, label, kb, _ in doc["ents"]] for doc in got["single"][:4]] == [
        [("Naloxone", "Chemical", "D009270"), ("hypotensive", "Disease", "D007022"), ("clonidine", "Chemical", "D003000")],
        # both short forms linked through the long form the detector found
        [("LBP", "Disease", "D007022"), ("clonidine", "Chemical", "D003000"), ("LBP", "Disease", "D007022")],
        [("cold", "Disease", "D003139")],
        [],
    ]
    # the same annotations in this process, candidates as plain lists
    nlp = spacy.load(linker_model)
    doc = nlp(LINKER_TEXTS[0])
    assert [[e.text, e.label_, e.kb_id_, e._.kb_candidates] for e in doc.ents] == got["single"][0]["ents"]


@pytest.fixture(scope="module")
def rel_model(tmp_path_factory) -> Path:
    """entity_ruler -> a trained mention-level medllm_rel (ADE, DOSE)."""
    from test_relations import ADE_PAIRS, ADE_PATTERNS, ADE_TRAIN, ade_doc, make_nlp, train

    install_extensions()
    nlp, _ = make_nlp({"@misc": "spacy_medllm.type_pairs.v1", "pairs": ADE_PAIRS, "level": "mention", "max_pairs": 100})
    train(nlp, [Example(nlp.make_doc(t), ade_doc(nlp, t, e, r)) for t, e, r in ADE_TRAIN], 60)
    nlp.add_pipe("entity_ruler", first=True).add_patterns(ADE_PATTERNS)
    path = tmp_path_factory.mktemp("rel") / "nlp"
    nlp.to_disk(path)
    return path


def test_relations_n_process_after_a_warm_call(rel_model, tmp_path):
    from test_relations import ADE_TRAIN

    texts = [t for t, _, _ in ADE_TRAIN] * 2
    got = run_guarded(rel_model, texts, tmp_path)
    assert got["threads"] == 2
    assert got["piped"] == got["single"]
    assert [[(r["label"], tuple(r["head"]), tuple(r["tail"])) for r in doc["rels"]] for doc in got["single"][:4]] == [
        [("ADE", (2, 3), (4, 5)), ("DOSE", (2, 3), (6, 8))],
        [("ADE", (6, 7), (8, 9))],
        [("ADE", (4, 5), (0, 1))],
        [("DOSE", (0, 1), (1, 3))],
    ]
    nlp = spacy.load(rel_model)
    assert get_relations(nlp(texts[0])) == got["single"][0]["rels"]
