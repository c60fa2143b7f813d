"""Regenerate the committed demo text-encoder assets, deterministically.

    python -m horse.codecs.demo.build_text_assets [--out DIR]

Writes into DIR (default ``horse/codecs/assets/demo_text``):
- ``tokenizer.json``: a ``tokenizers`` WordLevel tokenizer (NFKC + lowercase, split on whitespace and
  punctuation, one token per digit, ``[UNK]`` for unknown words, ``[EOS]`` appended). Its vocabulary is
  every word of a fixed corpus built below: shapes-AV captions plus common English words.
- ``config.json``: a tiny BERT encoder config (width 128, 2 layers, 4 heads) loadable by ``transformers``.
- ``model.safetensors``: its weights, drawn from a fixed seed (never trained): embeddings ~ N(0, 1),
  linear weights ~ N(0, 1/fan_in), biases 0, LayerNorm (1, 0). The post-LayerNorm BERT output is then
  unit-scale per token, and the random attention makes features contextual (word order matters).
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_text"
TOKENIZER_FILE, CONFIG_FILE, WEIGHTS_FILE = "tokenizer.json", "config.json", "model.safetensors"
SEED = 1234
PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
ENCODER_CONFIG = {  # transformers.BertConfig fields
    "model_type": "bert",
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "hidden_act": "gelu",
    "max_position_embeddings": 256,  # longer prompts are cut to this many tokens before encoding
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}

COLOURS = "red green blue yellow magenta cyan white orange purple pink black grey gray brown".split()
SHAPES = "circle square triangle disc ball box star shape shapes circles squares triangles".split()
SIZES = "small medium large tiny big huge little".split()
DIRECTIONS = (
    "left right up down upward upwards downward downwards diagonal diagonally leftward rightward "
    "horizontal horizontally vertical vertically across around toward towards"
).split()
SPEEDS = "slowly quickly fast slow steadily rapidly gently smoothly moderately very".split()
AUDIO_WORDS = (
    "beep beeps beeping tone tones sound sounds pitch pitched high low medium bounce bounces bouncing "
    "bounced wall walls edge edges silent silence quiet loud each every"
).split()
CAPTION_WORDS = (
    "a an the moves moving move travels traveling glides drifts on in of at and with against off from "
    "to frame frames background dark black plain clip video audio motion score quality it its"
).split()
GENERAL_ENGLISH = (
    "i you he she we they me him her us them my your our their this that these those there here what "
    "which who when where why how all any both few more most other some such no not only own same so "
    "than too can will just should now is are was were be been being have has had do does did doing "
    "would could may might must shall get got make made go goes went see seen look looks show shows "
    "shown take come comes give find think know want use used play plays playing turn turns start "
    "stops stop begin ends end keep keeps hold appear appears appearing disappear remains stays "
    "one two three four five six seven eight nine ten first second third last next new old good bad "
    "long short time times day night light bright colour color colors colours background foreground "
    "scene camera view center centre middle top bottom side corner inside outside over under above "
    "below between through into onto out about after before while during then again once twice "
    "man woman person people child dog cat car tree water sky sun house room table hand face voice "
    "music noise speech talk says said speaking singing song loudly softly clear clean blurry static "
    "noisy distorted simple single object objects line lines point points number numbers word words "
    "also but or if because as by for up yes"
).split()
DIGITS = [str(d) for d in range(10)]
PUNCTUATION = list(".,:;!?'\"-()/%")

CAPTION_TEMPLATES = [
    "a {size} {colour} {shape} moves {speed} {direction} and bounces off the walls.",
    "the {colour} {shape} beeps {pitch} at each bounce.",
    "a {size} {colour} {shape} travels {direction} {speed}; it beeps {pitch} at every bounce. motion score: 0.7",
]


def build_corpus() -> list[str]:
    """The fixed text the vocabulary is taken from: word lists plus filled-in shapes-AV captions."""
    lines = [" ".join(words) for words in (COLOURS, SHAPES, SIZES, DIRECTIONS, SPEEDS, AUDIO_WORDS,
                                           CAPTION_WORDS, GENERAL_ENGLISH, DIGITS, PUNCTUATION)]
    for template in CAPTION_TEMPLATES:
        for colour in COLOURS[:8]:
            for shape in SHAPES[:3]:
                lines.append(template.format(size=SIZES[0], colour=colour, shape=shape, speed=SPEEDS[0],
                                             direction=DIRECTIONS[0], pitch="high"))
    return lines


def build_tokenizer(corpus: list[str]) -> Tokenizer:
    """WordLevel tokenizer whose vocabulary is [PAD], [UNK], [EOS], then the corpus words sorted."""
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    words = set()
    for line in corpus:
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    vocab = {token: i for i, token in enumerate([PAD, UNK, EOS] + sorted(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return tokenizer


def build_weights(config: dict) -> dict[str, torch.Tensor]:
    """Seeded random weights for every BertModel parameter, drawn in sorted-name order."""
    from transformers import BertConfig, BertModel

    shapes = {name: p.shape for name, p in BertModel(BertConfig(**config), add_pooling_layer=False).named_parameters()}
    generator = torch.Generator().manual_seed(SEED)
    weights = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if "LayerNorm.weight" in name:
            weights[name] = torch.ones(shape)
        elif name.endswith("bias"):
            weights[name] = torch.zeros(shape)
        elif "embeddings" in name:
            weights[name] = torch.randn(shape, generator=generator)
        else:  # nn.Linear weight [out, in]
            weights[name] = torch.randn(shape, generator=generator) / shape[1] ** 0.5
    return weights


def build_text_assets(out_dir: Path | str = ASSETS_DIR) -> Path:
    """Write tokenizer.json, config.json and model.safetensors into out_dir; returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(build_corpus())
    tokenizer.save(str(out_dir / TOKENIZER_FILE))
    config = dict(ENCODER_CONFIG, vocab_size=tokenizer.get_vocab_size(), pad_token_id=tokenizer.token_to_id(PAD))
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(build_weights(config), str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "seed": str(SEED)})
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help=f"output folder (default {ASSETS_DIR})")
    print(f"wrote demo text assets to {build_text_assets(parser.parse_args().out)}")


if __name__ == "__main__":
    main()
