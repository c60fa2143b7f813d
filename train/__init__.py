"""The training application: Hydra + Lightning (+ DeepSpeed / FSDP2) around the horse library."""
