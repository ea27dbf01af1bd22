"""Whole-word masking for masked-LM pretraining (BERT's 15%, 80/10/10 recipe, by word)."""
from typing import Tuple

import numpy


def whole_word_mask(
    input_ids: numpy.ndarray,
    word_ids: numpy.ndarray,
    rng: numpy.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    n_special: int = 0,
    prob: float = 0.15,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Mask whole words: every piece of a chosen word gets the same treatment.

    input_ids (numpy.ndarray): int [rows, seq_len] token ids.
    word_ids (numpy.ndarray): int [rows, seq_len], the word of each token, unique within a
        row; -1 for special and padding tokens (never masked).
    rng (numpy.random.Generator): the random source (seed it for reproducible masks).
    mask_id (int): the [MASK] token id.
    vocab_size (int): random replacements are drawn from [n_special, vocab_size).
    prob (float): the share of words chosen for prediction.
    mask_frac / random_frac: of the chosen words, the share replaced by [MASK] / by random
        tokens; the rest stay as they are.
    RETURNS (inputs, labels): the masked inputs, and labels holding the original id at every
        chosen position and -100 elsewhere.
    """
    rows, seq_len = input_ids.shape
    n_words = int(word_ids.max()) + 1 if word_ids.size and word_ids.max() >= 0 else 0
    inputs = input_ids.copy()
    labels = numpy.full_like(input_ids, -100)
    if n_words == 0:
        return inputs, labels
    # one draw per (row, word): chosen?, and which of mask / random / keep
    chosen = rng.random((rows, n_words)) < prob
    action = rng.random((rows, n_words))
    valid = word_ids >= 0
    safe_wids = numpy.where(valid, word_ids, 0)
    row_idx = numpy.arange(rows)[:, None]
    tok_chosen = chosen[row_idx, safe_wids] & valid
    tok_action = action[row_idx, safe_wids]
    labels[tok_chosen] = input_ids[tok_chosen]
    to_mask = tok_chosen & (tok_action < mask_frac)
    to_random = tok_chosen & (tok_action >= mask_frac) & (tok_action < mask_frac + random_frac)
    inputs[to_mask] = mask_id
    n_random = int(to_random.sum())
    if n_random:
        inputs[to_random] = rng.integers(n_special, vocab_size, size=n_random)
    return inputs, labels
