"""Word and character error rates of ASR transcripts, with the text normalisation multilingual TTS/talking-video
evaluations use.

Normalisation (``normalize_text``), in order:
1. Unicode NFKC: full-width Latin letters, digits and punctuation become half-width (``ＡＢＣ１２`` -> ``ABC12``,
   ``，`` -> ``,``), compatibility forms are folded.
2. Lower case (``str.casefold``, so German ``ß`` -> ``ss``).
3. Punctuation and symbols removed: every character whose Unicode category starts with ``P`` (punctuation) or
   ``S`` (symbols), which covers ASCII and CJK punctuation (``。、「」！？…``), is replaced by a space (so
   ``word,word`` stays two words), except apostrophes, which are deleted (``don't`` -> ``dont``).
4. Whitespace collapsed to single spaces and trimmed.
Traditional -> Simplified Chinese conversion (some Mandarin scorers run zhconv/opencc) is NOT done: no such
converter is installed; pass transcripts in the script of the references.

Tokenisation (``tokenize``): CJK characters (Han, Hiragana, Katakana, Hangul syllables/jamo, CJK symbols) are each a
token, everything else is split on whitespace. So English scores by words, Chinese/Japanese/Korean by characters,
and mixed code-switched text by words and characters together (the "mixed error rate" of code-switching ASR).
``wer`` uses these tokens; ``cer`` scores every non-space character (spaces removed first) for all scripts, the
way Chinese, Japanese and Korean results are usually reported.

Edit distance is plain Levenshtein (substitution, insertion, deletion all cost 1); error rates are corpus level:
total edits / total reference tokens (as jiwer computes them; jiwer is not installed, and the DP is short).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Code-point ranges scored one character per token.
CJK_RANGES = (
    (0x1100, 0x11FF),   # Hangul Jamo
    (0x2E80, 0x2FDF),   # CJK radicals, Kangxi radicals
    (0x3040, 0x30FF),   # Hiragana, Katakana
    (0x3100, 0x31FF),   # Bopomofo, Hangul compatibility jamo, Katakana phonetic extensions
    (0x3400, 0x4DBF),   # CJK Extension A
    (0x4E00, 0x9FFF),   # CJK Unified Ideographs
    (0xA960, 0xA97F),   # Hangul Jamo Extended-A
    (0xAC00, 0xD7FF),   # Hangul syllables, Jamo Extended-B
    (0xF900, 0xFAFF),   # CJK compatibility ideographs
    (0xFF66, 0xFF9F),   # half-width Katakana
    (0x20000, 0x3134F),  # CJK Extensions B-G
)
APOSTROPHES = "'\u2019"  # deleted rather than spaced: contractions stay one word
_WHITESPACE = re.compile(r"\s+")


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in CJK_RANGES)


def normalize_text(text: str, *, lowercase: bool = True, remove_punctuation: bool = True) -> str:
    """Normalise a transcript or reference (steps in the module docstring)."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.casefold()
    if remove_punctuation:
        text = "".join("" if c in APOSTROPHES else " " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _WHITESPACE.sub(" ", text).strip()


def tokenize(text: str) -> list[str]:
    """Words of non-CJK text, single characters of CJK text (see the module docstring)."""
    tokens, word = [], []
    for char in text:
        if char.isspace() or is_cjk(char):
            if word:
                tokens.append("".join(word))
                word = []
            if not char.isspace():
                tokens.append(char)
        else:
            word.append(char)
    if word:
        tokens.append("".join(word))
    return tokens


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance between two token sequences (unit costs)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, start=1):
        current = [i]
        for j, hyp_token in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1,                              # deletion
                               current[j - 1] + 1,                           # insertion
                               previous[j - 1] + (ref_token != hyp_token)))  # substitution / match
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class ErrorRate:
    errors: int            # total edits over the corpus
    reference_tokens: int  # total reference tokens

    @property
    def rate(self) -> float:
        return self.errors / self.reference_tokens if self.reference_tokens else float("nan")


def _as_lists(references, hypotheses) -> tuple[list[str], list[str]]:
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses; give one transcript per reference")
    return refs, hyps


def word_errors(references, hypotheses, *, normalize: bool = True) -> ErrorRate:
    refs, hyps = _as_lists(references, hypotheses)
    prep = normalize_text if normalize else (lambda s: s)
    errors = total = 0
    for ref, hyp in zip(refs, hyps):
        ref_tokens, hyp_tokens = tokenize(prep(ref)), tokenize(prep(hyp))
        errors += edit_distance(ref_tokens, hyp_tokens)
        total += len(ref_tokens)
    return ErrorRate(errors, total)


def char_errors(references, hypotheses, *, normalize: bool = True) -> ErrorRate:
    refs, hyps = _as_lists(references, hypotheses)
    prep = normalize_text if normalize else (lambda s: s)
    errors = total = 0
    for ref, hyp in zip(refs, hyps):
        ref_chars = [c for c in prep(ref) if not c.isspace()]
        hyp_chars = [c for c in prep(hyp) if not c.isspace()]
        errors += edit_distance(ref_chars, hyp_chars)
        total += len(ref_chars)
    return ErrorRate(errors, total)


def wer(references, hypotheses, *, normalize: bool = True) -> float:
    """Corpus word error rate (CJK characters count as words); a string or a list of strings on each side."""
    return word_errors(references, hypotheses, normalize=normalize).rate


def cer(references, hypotheses, *, normalize: bool = True) -> float:
    """Corpus character error rate over non-space characters."""
    return char_errors(references, hypotheses, normalize=normalize).rate


__all__ = ["CJK_RANGES", "ErrorRate", "cer", "char_errors", "edit_distance", "is_cjk", "normalize_text", "tokenize",
           "wer", "word_errors"]
