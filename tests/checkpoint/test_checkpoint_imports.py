"""horse/checkpoint/ may import only torch, safetensors, numpy, zstandard, the stdlib, itself, and (optionally,
inside functions) huggingface_hub."""

import ast
import sys
from pathlib import Path

import horse.checkpoint

ALLOWED = {"torch", "safetensors", "numpy", "zstandard", "huggingface_hub", "__future__"}
PACKAGE_DIR = Path(horse.checkpoint.__file__).parent


def _imported_modules(source: str) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            mods |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            mods.add(node.module)
    return mods


def test_checkpoint_package_imports_only_allowed_modules():
    files = sorted(PACKAGE_DIR.glob("*.py"))
    assert len(files) >= 3
    for file in files:
        for mod in _imported_modules(file.read_text()):
            top = mod.split(".")[0]
            ok = top in ALLOWED or top in sys.stdlib_module_names or mod.startswith("horse.checkpoint")
            assert ok, f"{file.name} imports {mod}"


def test_huggingface_hub_is_imported_lazily():
    source = (PACKAGE_DIR / "save.py").read_text()
    top_level = {m for node in ast.parse(source).body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for m in _imported_modules(ast.unparse(node))}
    assert not any(m.startswith("huggingface_hub") for m in top_level)
