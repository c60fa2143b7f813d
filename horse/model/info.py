"""``horse model-info``: parameter count, per-component breakdown, sizes and state_dict keys of a preset."""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict

import torch

from .config import PRESET_DESCRIPTIONS, PRESETS, get_config
from .dit import DiTModel


def build_on_meta(config) -> DiTModel:
    with torch.device("meta"):
        return DiTModel(config)


def component(name: str, cfg) -> str:
    if name.startswith("adapter."):
        return "adapter"
    if name.startswith("final_"):
        return "heads"
    layer = int(name.split(".")[2])
    kind = "multi-expert" if layer in cfg.mm_layers else "shared"
    part = "attention" if ".attention." in name or "attn_post_norm" in name else "mlp"
    return f"layers ({kind}) {part}"


def breakdown(model: DiTModel) -> "OrderedDict[str, int]":
    counts: OrderedDict[str, int] = OrderedDict()
    for name, p in model.named_parameters():
        key = component(name, model.config)
        counts[key] = counts.get(key, 0) + p.numel()
    return counts


def state_dict_lines(model: DiTModel) -> list[str]:
    return [f"{k}\t{','.join(str(s) for s in v.shape)}" for k, v in sorted(model.state_dict().items())]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="horse model-info", description=__doc__)
    p.add_argument("--preset", default="magihuman-15b",
                   help=f"one of {', '.join(PRESETS)}, or a JSON file of official ModelConfig fields")
    p.add_argument("--keys", action="store_true", help="list every state_dict entry as name<TAB>shape")
    args = p.parse_args(argv)
    if args.preset.endswith(".json"):
        with open(args.preset) as f:
            config = get_config(json.load(f))
    else:
        config = get_config(args.preset)
    model = build_on_meta(config)
    if args.keys:
        print("\n".join(state_dict_lines(model)))
        return 0
    total = sum(p.numel() for p in model.parameters())
    print(f"preset: {args.preset}" + (f" ({PRESET_DESCRIPTIONS[args.preset]})" if args.preset in PRESETS else ""))
    print(f"parameters: {total:,} ({total / 1e9:.3f}B); state_dict entries: {len(model.state_dict())}")
    print(f"size: bf16 {total * 2 / 1e9:.2f} GB, fp32 {total * 4 / 1e9:.2f} GB")
    for name, n in breakdown(model).items():
        print(f"  {name:<32}{n:>16,}  {100 * n / total:5.1f}%")
    c = config
    print(f"layers {c.num_layers}, hidden {c.hidden_size}, heads {c.num_heads_q}q/{c.num_heads_kv}kv x {c.head_dim}, "
          f"multi-expert layers {list(c.mm_layers)}, gelu7 layers {list(c.gelu7_layers)}, "
          f"local-attention layers {len(c.local_attn_layers)}")
    return 0
