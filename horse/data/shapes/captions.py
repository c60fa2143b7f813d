"""Captions of shapes-AV: a few templates over the generating parameters, parsed back by ``parse_caption``.

Every word is in the demo text encoder's vocabulary (``horse/codecs/demo/build_text_assets.py``), and a
caption is about 25 tokens, e.g.
"a small red circle moves up right quickly on a grey background and beeps low at each bounce. motion score: 0.7".
The motion score phrase follows Open-Sora's "motion score: X" with one decimal (see the package docstring).
"""

from __future__ import annotations

import re

from .config import ShapesConfig

CAPTION_TEMPLATES = (
    "a {size} {colour} {shape} moves {direction} {speed} on a {background} background "
    "and beeps {pitch} at each bounce. {motion}",
    "a {size} {colour} {shape} travels {direction} {speed} on a {background} background; "
    "it beeps {pitch} at every bounce. {motion}",
    "on a {background} background, a {size} {colour} {shape} glides {direction} {speed} "
    "and beeps {pitch} at each bounce. {motion}",
)
MOTION_PREFIX = "motion score:"
_MOTION_RE = re.compile(r"motion score:\s*([0-9]*\.?[0-9]+)")


def motion_phrase(score: float) -> str:
    """Open-Sora style motion phrase for a score in [0, 1], one decimal: ``motion_phrase(0.73) == "motion score: 0.7"``."""
    score = float(score)
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"motion score must be in [0, 1], got {score}")
    return f"{MOTION_PREFIX} {score:.1f}"


def make_caption(params: dict, motion: float, template: int = 0) -> str:
    """Caption of one clip from its parameters (keys size, colour, shape, direction, speed, background, pitch)."""
    if not 0 <= template < len(CAPTION_TEMPLATES):
        raise ValueError(f"template must be in [0, {len(CAPTION_TEMPLATES) - 1}], got {template}")
    return CAPTION_TEMPLATES[template].format(motion=motion_phrase(motion), **params)


def _alternation(words) -> str:
    # Longest first so "up right" wins over "up"; escaped because names are free text.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def parse_caption(caption: str, config: ShapesConfig | None = None) -> dict:
    """Recover {size, colour, shape, direction, speed, background, pitch, motion_score} from a caption.

    Works for every template above (word order differs between them). Raises ValueError naming the
    part that could not be found.
    """
    config = config or ShapesConfig()
    text = " ".join(caption.lower().split())
    pitch_labels = [label for label, _ in config.pitches.values()]
    patterns = {
        "subject": rf"\b({_alternation(config.sizes)}) ({_alternation(config.colours)}) ({_alternation(config.shapes)})\b",
        "motion": rf"\b(?:moves|travels|glides) ({_alternation(config.directions)}) ({_alternation(config.speeds)})\b",
        "background": rf"\bon a ({_alternation(config.backgrounds)}) background\b",
        "pitch": rf"\bbeeps ({_alternation(pitch_labels)})\b",
    }
    found = {}
    for part, pattern in patterns.items():
        match = re.search(pattern, text)
        if match is None:
            raise ValueError(f"caption {caption!r} has no recognisable {part} (pattern {pattern!r})")
        found[part] = match.groups()
    score = _MOTION_RE.search(text)
    return {
        "size": found["subject"][0], "colour": found["subject"][1], "shape": found["subject"][2],
        "direction": found["motion"][0], "speed": found["motion"][1],
        "background": found["background"][0], "pitch": found["pitch"][0],
        "motion_score": float(score.group(1)) if score else None,
    }
