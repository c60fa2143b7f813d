"""Checkpoint I/O: safetensors folders (single file or HF-style shards, optionally .zst) <-> any nn.Module."""

from horse.checkpoint.load import CheckpointMismatchError, LoadReport, load_state_dict_folder
from horse.checkpoint.safetensors_io import (
    INDEX_FILE_NAME,
    SINGLE_FILE_NAME,
    TensorInfo,
    read_checkpoint_keys,
    resolve_checkpoint_files,
)
from horse.checkpoint.save import save_state_dict_folder

__all__ = [
    "CheckpointMismatchError",
    "INDEX_FILE_NAME",
    "LoadReport",
    "SINGLE_FILE_NAME",
    "TensorInfo",
    "load_state_dict_folder",
    "read_checkpoint_keys",
    "resolve_checkpoint_files",
    "save_state_dict_folder",
]
