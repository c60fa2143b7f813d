"""Loading the evaluation networks' weights from local paths, checked against committed key lists.

Nothing here downloads: every loader takes a path (file or folder) that the user fetched elsewhere, raises
``FileNotFoundError`` naming it when absent, and compares the tensors found there with
``horse/metrics/key_lists/<name>.json`` before building the network, so a wrong or truncated file fails with a
list of missing / unexpected / wrongly shaped keys instead of a silently half-loaded model.

Key-list JSON::

    {"model": "what it is", "source": "where the layout comes from",
     "repeats": {"encoder.layers": 12},              # "encoder.layers.{n}.x" stands for encoder.layers.0..11.x
     "tensors": {"name": [shape...], ...},
     "optional": ["regex", ...],                      # keys that may be absent (e.g. BatchNorm num_batches_tracked)
     "ignored": ["regex", ...],                       # extra keys tolerated in files (e.g. unused buffers)
     "config": {"field": value, "sub.field": value}}  # Hugging Face folders: config.json must agree

``make_key_list`` builds one from a module's state dict (real sizes are built on the meta device, no memory) and
``dump_key_list`` writes it; the tests check each committed list against the module or config it describes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

KEY_LIST_DIR = Path(__file__).with_name("key_lists")
REPEAT_MARK = "{n}"
MAX_LISTED = 12  # keys named per category in a mismatch error
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".model")
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
NO_DOWNLOAD_HINT = "this project never downloads weights: fetch them elsewhere and pass the local path"


class KeyListMismatch(ValueError):
    """The weights found do not have the keys/shapes of the committed key list."""


@dataclass
class KeyList:
    name: str
    tensors: dict[str, tuple[int, ...]]
    optional: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model: str = ""


def _expand(tensors: Mapping[str, list], repeats: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    out = {}
    for key, shape in tensors.items():
        if REPEAT_MARK not in key:
            out[key] = tuple(shape)
            continue
        prefix = key.split("." + REPEAT_MARK, 1)[0]
        if prefix not in repeats:
            raise ValueError(f"key list entry {key!r} repeats {prefix!r}, which has no count in 'repeats'")
        for i in range(repeats[prefix]):
            out[key.replace(REPEAT_MARK, str(i), 1)] = tuple(shape)
    return out


def load_key_list(key_list: str | Path | Mapping) -> KeyList:
    """A committed list by name (``"i3d_400"``), a JSON path, or an already parsed dict."""
    if isinstance(key_list, Mapping):
        data, name = dict(key_list), str(key_list.get("model", "custom"))
    else:
        path = Path(key_list)
        if path.suffix != ".json":
            path = KEY_LIST_DIR / f"{key_list}.json"
        if not path.is_file():
            known = sorted(p.stem for p in KEY_LIST_DIR.glob("*.json"))
            raise FileNotFoundError(f"key list {key_list!r} not found ({path}); committed lists: {known}")
        data, name = json.loads(path.read_text()), path.stem
    return KeyList(name, _expand(data["tensors"], data.get("repeats", {})), list(data.get("optional", [])),
                   list(data.get("ignored", [])), dict(data.get("config", {})), data.get("model", ""))


def make_key_list(state_dict: Mapping[str, torch.Tensor], *, model: str, source: str = "",
                  repeat_prefixes: Iterable[str] = (), optional: Iterable[str] = (), ignored: Iterable[str] = (),
                  config: Mapping | None = None) -> dict:
    """A key-list dict for ``state_dict``; blocks under each of ``repeat_prefixes`` must be identical."""
    shapes = {k: list(v.shape) for k, v in state_dict.items()}
    repeats, tensors = {}, {}
    for prefix in repeat_prefixes:
        pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
        blocks: dict[int, dict] = {}
        for key, shape in shapes.items():
            m = pattern.match(key)
            if m:
                blocks.setdefault(int(m.group(1)), {})[m.group(2)] = shape
        if not blocks:
            raise ValueError(f"no keys under {prefix!r}")
        first = blocks[min(blocks)]
        if sorted(blocks) != list(range(len(blocks))) or any(b != first for b in blocks.values()):
            raise ValueError(f"the blocks under {prefix!r} are not identical; list them without repeat_prefixes")
        repeats[prefix] = len(blocks)
        tensors.update({f"{prefix}.{REPEAT_MARK}.{rest}": shape for rest, shape in first.items()})
        shapes = {k: v for k, v in shapes.items() if not pattern.match(k)}
    tensors.update(shapes)
    out = {"model": model, "source": source, "repeats": repeats, "tensors": dict(sorted(tensors.items())),
           "optional": list(optional), "ignored": list(ignored)}
    if config:
        out["config"] = dict(config)
    return out


def nest_config(dotted: Mapping) -> dict:
    """``{"text_config.hidden_size": 768}`` -> ``{"text_config": {"hidden_size": 768}}``."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def hf_key_list(model_class, config_class, config: Mapping, **fields) -> dict:
    """Key list of a transformers model built (on the meta device) from dotted ``config`` fields."""
    with torch.device("meta"):
        module = model_class(config_class(**nest_config(config)))
    return make_key_list(module.state_dict(), config=config, **fields)


def dump_key_list(key_list: Mapping) -> str:
    """JSON text of a key list with one tensor per line (diff-friendly)."""
    head = {k: v for k, v in key_list.items() if k != "tensors"}
    lines = [f"  {json.dumps(k)}: {json.dumps(list(v))}" for k, v in key_list["tensors"].items()]
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    return text + ',\n  "tensors": {\n  ' + ",\n  ".join(lines) + "\n  }\n}\n"


def require_path(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} weights not found at {path}; {NO_DOWNLOAD_HINT}")
    return path


def read_weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a weights file or Hugging Face folder (safetensors read without loading data)."""
    path = Path(path)
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                if name.endswith(".index.json"):
                    shards = sorted(set(json.loads((path / name).read_text())["weight_map"].values()))
                    return {k: s for shard in shards for k, s in read_weight_shapes(path / shard).items()}
                return read_weight_shapes(path / name)
        raise FileNotFoundError(f"{path} holds none of {HF_WEIGHT_FILES}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    return {k: tuple(v.shape) for k, v in load_torch_weights(path).items()}


def load_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch pickle file (``weights_only``: no code runs while loading)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(f"cannot read weights from {path}: expected .safetensors or one of {TORCH_SUFFIXES}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickles of whole modules, TorchScript archives...
        raise ValueError(f"{path} is not a plain state dict readable with weights_only=True ({err}); "
                         "save model.state_dict() instead") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def check_shapes(shapes: Mapping[str, tuple], key_list: KeyList, *, source: str = "weights",
                 extra_ignored: Iterable[str] = ()) -> None:
    """Raise ``KeyListMismatch`` listing missing, unexpected and wrongly shaped keys."""
    ignored = [re.compile(p) for p in [*key_list.ignored, *extra_ignored]]
    optional = [re.compile(p) for p in key_list.optional]
    missing = [k for k in key_list.tensors if k not in shapes and not any(p.search(k) for p in optional)]
    unexpected = [k for k in shapes if k not in key_list.tensors and not any(p.search(k) for p in ignored)]
    wrong = [f"{k}: found {list(shapes[k])}, expected {list(s)}" for k, s in key_list.tensors.items()
             if k in shapes and tuple(shapes[k]) != tuple(s)]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source} do not match the key list {key_list.name!r} ({key_list.model}):"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            lines.append(f"  {len(items)} {label}: " + ", ".join(items[:MAX_LISTED]) + more)
    raise KeyListMismatch("\n".join(lines))


def check_config(config: Mapping, key_list: KeyList, *, source: str = "config.json") -> None:
    """Every ``key_list.config`` field (dotted for nested) must equal the folder's config value."""
    wrong = []
    for dotted, expected in key_list.config.items():
        value = config
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value != expected:
            wrong.append(f"{dotted}={value!r} (expected {expected!r})")
    if wrong:
        raise KeyListMismatch(f"{source} does not describe {key_list.name!r}: " + ", ".join(wrong))


def load_checked_state_dict(path: str | Path, key_list: str | Path | Mapping, what: str,
                            strip_prefixes: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Read a single weights file, strip wrapper prefixes (e.g. ``"module."``), check it against ``key_list``."""
    path = require_path(path, what)
    if path.is_dir():
        raise ValueError(f"{what} weights must be a file (.safetensors or {TORCH_SUFFIXES}), got the folder {path}")
    state = load_torch_weights(path)
    for prefix in strip_prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, load_key_list(key_list), source=f"{what} {path}")
    return state


def load_module_weights(module: torch.nn.Module, path, key_list, what: str,
                        strip_prefixes: Iterable[str] = ("module.",)) -> torch.nn.Module:
    """Checked weights -> ``module`` (keys outside the module, i.e. the list's ``ignored`` ones, are dropped)."""
    state = load_checked_state_dict(path, key_list, what, strip_prefixes)
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    absent = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if absent:
        raise KeyListMismatch(f"{what}: the module has keys the checked file lacks: {absent[:MAX_LISTED]}")
    return module.eval()


def load_hf_folder(path, key_list, what: str, model_class):
    """A Hugging Face model folder checked (config fields + tensor names/shapes) and loaded offline."""
    path = require_path(path, what)
    config_file = path / "config.json"
    if not path.is_dir() or not config_file.is_file():
        raise FileNotFoundError(f"{what}: {path} is not a Hugging Face model folder (no config.json); "
                                f"{NO_DOWNLOAD_HINT}")
    keys = load_key_list(key_list)
    config = model_class.config_class.from_pretrained(str(path), local_files_only=True).to_dict()  # with defaults
    check_config(config, keys, source=f"{what} {config_file}")
    tolerated = list(getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or [])
    check_shapes(read_weight_shapes(path), keys, source=f"{what} {path}", extra_ignored=tolerated)
    return model_class.from_pretrained(str(path), local_files_only=True).eval()


_MODEL_LOADERS = {"load_i3d": "horse.metrics.fvd", "load_vggish": "horse.metrics.fad",
                  "load_syncnet": "horse.metrics.sync", "load_clip": "horse.metrics.clip_score",
                  "load_whisper": "horse.metrics.asr"}


def __getattr__(name: str):
    """``from horse.metrics.loaders import load_i3d`` etc.: the per-model loaders live beside their metric."""
    if name in _MODEL_LOADERS:
        import importlib

        return getattr(importlib.import_module(_MODEL_LOADERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["KEY_LIST_DIR", "KeyList", "KeyListMismatch", "check_config", "dump_key_list", "hf_key_list", "nest_config",
           "check_shapes", "load_checked_state_dict",
           "load_hf_folder", "load_key_list", "load_module_weights", "load_torch_weights", "make_key_list",
           "read_weight_shapes", "require_path"]
