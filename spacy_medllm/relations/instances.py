"""Relation instances: candidate pairs, features, gold alignment, reader and record view.

The pieces live in their own modules (`pairs`, `features`, `gold`, `reader`, `records`);
their names stay importable from here, as configs and scripts may name this module.
"""
from .features import (
    MAX_BETWEEN, N_COUNT_BUCKETS, N_DISTANCE_IDS, N_GAP_BUCKETS, N_POSITION_BUCKETS, N_SENTENCE_BUCKETS,
    between, count_bucket, distance_id, gap_bucket, position_bucket, sentence_bucket,
)
from .gold import aligned_gold_entities, assigns_entities, gold_entity_docs, with_gold_entities
from .pairs import LEVELS, SENTENCE_ENDS, WILDCARD, Entity, Instances, TypePairs, make_type_pairs, sentence_ids
from .reader import create_relation_corpus
from .records import concept_keys, concept_pairs

__all__ = [
    "LEVELS", "WILDCARD", "SENTENCE_ENDS", "Entity", "Instances", "TypePairs", "make_type_pairs", "sentence_ids",
    "N_GAP_BUCKETS", "N_DISTANCE_IDS", "N_COUNT_BUCKETS", "N_POSITION_BUCKETS", "N_SENTENCE_BUCKETS", "MAX_BETWEEN",
    "gap_bucket", "distance_id", "sentence_bucket", "between", "count_bucket", "position_bucket",
    "aligned_gold_entities", "with_gold_entities", "assigns_entities", "gold_entity_docs",
    "create_relation_corpus", "concept_keys", "concept_pairs",
]
