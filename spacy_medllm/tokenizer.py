"""A tokenizer for biomedical text.

spaCy's English tokenizer keeps "PAN)-induced", "Na+/K+", "thallium-201" and
"vitamin D." as single tokens; 1.4% of BC5CDR mentions end inside such a token and
can then never be predicted exactly. This tokenizer adds infixes that cut at
brackets, slashes, plus signs and hyphens between word characters, and a suffix
rule for a final period after a capital letter or digit.
"""
from typing import Callable

from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.util import compile_infix_regex, compile_suffix_regex, registry

BIOMEDICAL_INFIXES = [
    r"[\(\)\[\]]",
    r"(?<=[^\s/])/(?=[^\s/])",
    r"(?<=[A-Za-z0-9\)\]\+])-+(?=[A-Za-z0-9\(\[])",
    r"(?<=[A-Za-z0-9\)\]])\+",
    r"(?<=[a-z])(?=[A-Z][a-z]{2,})(?<![A-Z][a-z])",
]
BIOMEDICAL_SUFFIXES = [r"(?<=[A-Z0-9])\.$", r"-$", r"\+$"]


@registry.tokenizers("spacy_medllm.BiomedicalTokenizer.v1")
def create_biomedical_tokenizer() -> Callable[[Language], Tokenizer]:
    """spaCy's tokenizer for the language, with extra infix and suffix rules for biomedical text."""

    def make_tokenizer(nlp: Language) -> Tokenizer:
        defaults = nlp.Defaults
        infixes = list(defaults.infixes or []) + BIOMEDICAL_INFIXES
        suffixes = list(defaults.suffixes or []) + BIOMEDICAL_SUFFIXES
        prefixes = list(defaults.prefixes or [])
        from spacy.util import compile_prefix_regex

        return Tokenizer(
            nlp.vocab,
            rules=defaults.tokenizer_exceptions,
            prefix_search=compile_prefix_regex(prefixes).search,
            suffix_search=compile_suffix_regex(suffixes).search,
            infix_finditer=compile_infix_regex(infixes).finditer,
            token_match=defaults.token_match,
            url_match=defaults.url_match,
        )

    return make_tokenizer
