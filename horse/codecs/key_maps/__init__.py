"""Key mappings from published checkpoint layouts to diffusers modules, and their checks.

Each mapping module (`wan22_vae`, `oobleck`) has a forward function (published name -> diffusers
name, None when the name is unknown) and an inverse used by tests to write tiny checkpoints in
the published layout. The JSON files next to this one list the real published key names and
shapes; their "source" field says how they were obtained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

KEY_LIST_DIR = Path(__file__).parent
WAN22_VAE_KEYS_FILE = KEY_LIST_DIR / "wan2.2_vae_keys.json"
STABLE_AUDIO_OPEN_VAE_KEYS_FILE = KEY_LIST_DIR / "stable_audio_open_1.0_vae_keys.json"
MAX_LISTED_KEYS = 20  # how many offending names an error message spells out per category


def load_published_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Names -> shapes of a published checkpoint, from one of the JSON lists in this folder."""
    with open(path) as f:
        return {name: tuple(shape) for name, shape in json.load(f)["keys"].items()}


def _listing(title: str, names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:MAX_LISTED_KEYS])
    more = f" ... and {len(names) - MAX_LISTED_KEYS} more" if len(names) > MAX_LISTED_KEYS else ""
    return f"\n  {title} ({len(names)}): {shown}{more}"


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    rename: Callable[[str], str | None],
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    source: str,
    reshape: Callable[[str, torch.Tensor], torch.Tensor] = lambda name, value: value,
) -> dict[str, torch.Tensor]:
    """Rename every tensor of `state_dict` and check the result against `expected` (names -> shapes).

    `reshape(new_name, value)` adapts a value whose layout differs between the two conventions.
    Raises ValueError listing unmapped, missing, duplicated and wrongly shaped keys, so a checkpoint
    that does not fit is never loaded half-way.
    """
    converted: dict[str, torch.Tensor] = {}
    unmapped, duplicated = [], []
    for name, value in state_dict.items():
        new_name = rename(name)
        if new_name is None:
            unmapped.append(name)
        elif new_name in converted:
            duplicated.append(f"{name} -> {new_name}")
        else:
            converted[new_name] = reshape(new_name, value)
    missing = [name for name in expected if name not in converted]
    unexpected = [name for name in converted if name not in expected]
    wrong_shape = [
        f"{name} {tuple(converted[name].shape)} != {tuple(shape)}"
        for name, shape in expected.items()
        if name in converted and tuple(converted[name].shape) != tuple(shape)
    ]
    if unmapped or duplicated or missing or unexpected or wrong_shape:
        raise ValueError(
            f"{source} does not match the expected model layout (check the file and the config):"
            + (_listing("keys with no mapping", unmapped) if unmapped else "")
            + (_listing("keys mapped twice", duplicated) if duplicated else "")
            + (_listing("model keys missing from the file", missing) if missing else "")
            + (_listing("mapped keys the model does not have", unexpected) if unexpected else "")
            + (_listing("shape mismatches", wrong_shape) if wrong_shape else "")
        )
    return converted


def expected_shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    return {name: value.shape for name, value in module.state_dict().items()}
