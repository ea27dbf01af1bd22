"""Shared fixtures: a tiny BERT encoder built from a config (no download), inline corpora."""
import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_CORPUS = Path(__file__).parent.parent.parent / "shared" / "corpus"

WORDS = """the of and in a to with was were is by for patients induced disease chemical drug
effect dose treatment after rats cancer heart failure toxicity renal liver acute chronic
hypertension hypotension naloxone clonidine cisplatin lithium seizures pain fever blood
pressure rate mg kg day this that we study results no not associated case patient""".split()


def build_tiny_bert(path: Path) -> Path:
    """A 2-layer, 32-wide BERT with a small WordPiece vocab, saved in Hugging Face format."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = specials + chars + ["##" + c for c in string.ascii_lowercase + string.digits] + WORDS
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=512,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    if not SHARED_CORPUS.exists():
        pytest.skip(f"{SHARED_CORPUS} not found")
    return SHARED_CORPUS
