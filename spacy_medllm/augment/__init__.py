"""Registered spaCy augmenters (`[corpora.train.augmenter]` in a config)."""
from .entity_swap import create_entity_swap_augmenter, entity_names_from_docbin

__all__ = ["create_entity_swap_augmenter", "entity_names_from_docbin"]
