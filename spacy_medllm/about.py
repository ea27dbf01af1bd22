__title__ = "spacy_medllm"
__version__ = "0.1.0"
