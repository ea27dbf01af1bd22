"""The `medllm_rel` component: relation extraction at sentence and document level."""
from .gold import gold_entity_docs
from .pairs import Entity, Instances, TypePairs, make_type_pairs
from .reader import create_relation_corpus
from .records import concept_keys, concept_pairs
from .model import RelBatch, build_pair_representation, build_relation_classifier, build_relation_model
from .pipe import RelationExtractor, make_relation_extractor
from .render import render
from .scorer import make_relation_scorer, score_relations

__all__ = [
    "RelationExtractor", "make_relation_extractor", "build_relation_model", "build_pair_representation",
    "build_relation_classifier", "RelBatch", "make_type_pairs", "TypePairs", "Instances", "Entity",
    "create_relation_corpus", "gold_entity_docs", "concept_pairs", "concept_keys", "score_relations",
    "make_relation_scorer", "render",
]
