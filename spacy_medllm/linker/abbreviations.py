"""Abbreviation definitions, "long form (SF)" and "SF (long form)", found in a document's text.

The algorithm is Schwartz & Hearst's ("A simple algorithm for identifying abbreviation
definitions in biomedical text", PSB 2003), run on the characters of the text rather
than on spaCy tokens as scispaCy's `AbbreviationDetector` runs it. On a tokenizer that
splits hyphens and punctuation, as the biomedical tokenizer does, the token version
misses or truncates definitions: its limits count tokens ("D-MED" is three tokens, one of
them one character long, so the short form is refused), and it maps the long form's
characters back to tokens through two different joins, cutting
"1-(2-chloroethyl)-3-cyclohexyl-1-nitrosourea (CCNU)" to "cyclohexyl-1-nitrosourea".
Here, as in the paper's reference implementation:

- a parenthesis's text is the short form when it has at most two words, else it is the
  long form and the short form is the word before the parenthesis; where the text has a
  ", ", "; " or ": ", one word before the first of them is the short form
  ("diethylnitrosamine (DEN: 10 mg/kg/day)");
- a short form has 2-10 characters, a letter, and starts with a letter or digit; at most
  half of it may be other than letters (scispaCy's filter, which also keeps "(1990)"
  and "(n = 12)" out);
- the long form is the shortest text before the parenthesis (within the sentence) whose
  characters hold the short form's letters and digits in order, the first one at the
  start of a word, extended to the start of its whitespace word; it has at most
  min(|SF| + 5, 2 |SF|) words (split at spaces and hyphens), is no shorter than the short
  form, and does not contain it as a word; an unbalanced bracket it starts with is
  dropped ("[complete response").

Each short form keeps its first definition; one long form may define several short forms
("ataxia-telangiectasia (A-T)" and, later, "(AT)").
"""
import re
from bisect import bisect_right
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

# where the long form's search stops: the end of the previous sentence
_SENTENCE_END = re.compile(r"[.!?]\s+|\n")
_WORDS = re.compile(r"[^\s\-]+")
_SEPARATOR = re.compile(r"[,;:]\s")
_BRACKETS = re.compile(r"[()\n]")
_MAX_INNER = 200  # characters inside a parenthesis worth reading


def abbreviation_definitions(text: str) -> Dict[str, str]:
    """Short form -> long form of the definitions in `text`, in the order they occur."""
    out: Dict[str, str] = {}
    for short, long in definitions(text):
        out.setdefault(short, long)
    return out


def definitions(text: str) -> Iterator[Tuple[str, str]]:
    """Every (short form, long form) pair of `text`, in order."""
    sentence_starts = [m.end() for m in _SENTENCE_END.finditer(text)]
    for open_at, close_at in _parentheses(text):
        inner = text[open_at + 1 : close_at]
        cut = _SEPARATOR.search(inner)
        if cut is not None:
            inner = inner[: cut.start()].strip()
            if len(inner.split()) != 1:
                continue
        inner = inner.strip()
        if not inner:
            continue
        # the long form stays within the parenthesis's sentence
        at = bisect_right(sentence_starts, open_at)
        before = text[sentence_starts[at - 1] if at else 0 : open_at].rstrip()
        if not before:
            continue
        if len(inner.split()) <= 2:
            short, candidate = inner, before
        else:
            # "SF (long form)": the word before the parenthesis, its punctuation stripped
            short = before.split()[-1].strip(",;:")
            candidate = inner
        if not _valid_short_form(short):
            continue
        long = _best_long_form(short, candidate)
        if long is not None and long[0] in "([" and _unbalanced(long):
            long = long[1:].lstrip()
        if long and _valid_pair(short, long):
            yield short, long


def _parentheses(text: str) -> Iterator[Tuple[int, int]]:
    """(open, close) character offsets of each balanced parenthesis, nested ones too, in the
    order they close; none spans a line break."""
    opened = []
    for match in _BRACKETS.finditer(text):
        char, i = match.group(), match.start()
        if char == "(":
            opened.append(i)
        elif char == ")":
            if opened:
                open_at = opened.pop()
                if i - open_at - 1 <= _MAX_INNER:
                    yield open_at, i
        else:
            opened = []


def _valid_short_form(short: str) -> bool:
    if not 2 <= len(short) <= 10 or len(short.split()) > 2:
        return False
    if not short[0].isalnum() or not any(c.isalpha() for c in short):
        return False
    return sum(c.isalpha() for c in short) / len(short) >= 0.5


def _unbalanced(text: str) -> bool:
    return text.count("(") != text.count(")") or text.count("[") != text.count("]")


def _best_long_form(short: str, long: str) -> Optional[str]:
    """The shortest end of `long` whose characters hold the short form's letters and digits
    in order, the first at a word start; extended to the start of its whitespace word."""
    s, i = len(short) - 1, len(long) - 1
    while s >= 0:
        char = short[s].lower()
        if not char.isalnum():
            s -= 1
            continue
        while i >= 0 and (long[i].lower() != char or (s == 0 and i > 0 and long[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    start = long.rfind(" ", 0, i + 1) + 1
    return long[start:].strip() or None


def _valid_pair(short: str, long: str) -> bool:
    if len(long) < len(short) or long.endswith(short) or (short + " ") in long:
        return False
    n_words = len(_WORDS.findall(long))
    return n_words <= min(len(short) + 5, 2 * len(short))


def number_variants(long_forms: Mapping[str, str]) -> Dict[str, str]:
    """The definitions plus the other grammatical number of each plural-able pair: "VSDs" defined
    as "ventricular septal defects" also gives "VSD" -> "ventricular septal defect", and "COC"
    -> "combined oral contraceptive" gives "COCs" -> "combined oral contraceptives". A short
    form's own definition always wins."""
    out = dict(long_forms)
    for short, long in long_forms.items():
        if len(short) > 2 and short.endswith("s") and short[-2].isupper() and long.endswith("s") and not long.endswith("ss"):
            out.setdefault(short[:-1], long[:-3] + "y" if long.endswith("ies") else long[:-1])
        elif short[-1].isupper() and long[-1].isalpha() and not long.endswith("s"):
            out.setdefault(short + "s", long[:-1] + "ies" if long.endswith("y") and long[-2:-1] not in "aeiou" else long + "s")
    return out


def _looks_abbreviated(text: str) -> bool:
    """A mention written as a short form: one word that Schwartz & Hearst would take as a short
    form, with at least two capital letters ("OAB", "PGs"; not "startle")."""
    return " " not in text and _valid_short_form(text) and sum(c.isupper() for c in text) >= 2


def mention_long_forms(mentions: Sequence[Tuple[str, str]], defined: Mapping[str, str]) -> Dict[str, str]:
    """Short form -> long form for the short forms a document uses without defining them, read
    off its other mentions: an undefined short-form mention ("OAB", no "(OAB)" in the text)
    whose letters and digits another mention of the same label spells in order, the first at
    the start of that mention, as in a definition ("overactive bladder"). Where several
    mentions do, the most frequent, then the first.

    mentions (Sequence[Tuple[str, str]]): (text, label) of the document's mentions, in order.
    defined (Mapping[str, str]): the document's own definitions; their short forms are left alone.
    """
    counts: Dict[Tuple[str, str], int] = {}
    for text, label in mentions:
        counts[(text, label)] = counts.get((text, label), 0) + 1
    shorts = [key for key in counts if _looks_abbreviated(key[0])]
    longs = [(key, n) for key, n in counts.items() if not _looks_abbreviated(key[0])]
    out: Dict[str, str] = {}
    for short, label in shorts:
        if short in defined or short in out:
            continue
        best, best_n = None, 0
        for (text, other_label), n in longs:
            if other_label != label or len(text) <= len(short):
                continue
            if _best_long_form(short, text) == text.strip() and _valid_pair(short, text) and n > best_n:
                best, best_n = text, n
        if best is not None:
            out[short] = best
    return out
