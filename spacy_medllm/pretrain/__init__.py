"""Domain-adaptive pretraining: continued masked-LM training with the lower layers frozen."""
from .data import PackedText, TextSource, pack_words, read_texts
from .masking import whole_word_mask
from .mlm import PretrainSettings, pretrain

__all__ = ["PackedText", "PretrainSettings", "TextSource", "pack_words", "pretrain", "read_texts", "whole_word_mask"]
