"""Run an eval suite on one checkpoint (results.json + report.html + model card) or on several (and compare them).

Called by ``eval.py`` (Hydra) with the composed config; ``run(cfg, out_dir)`` also works without Hydra (tests).
Heavy imports (torch, the pipeline, matplotlib) happen inside functions so that ``eval.py --help`` stays fast.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import platform
import sys
from pathlib import Path

from omegaconf import OmegaConf

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
COMPARISON_FILE = "comparison.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("horse", "eval")  # their .py files make up the code version
HASH_CHUNK = 1 << 20


def _entry_name(path) -> str:
    path = Path(str(path)).expanduser()
    return (path.parent.name if path.name == RESULTS_FILE else path.name) or "checkpoint"


def run_name(checkpoint, checkpoints) -> str:
    """Output sub-folder: the checkpoint folder's name, or ``compare-A-vs-B`` for several."""
    if checkpoints:
        return "compare-" + "-vs-".join(_entry_name(c) for c in checkpoints)
    return _entry_name(checkpoint) if checkpoint else "no-checkpoint"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("eval_run_name", run_name, replace=True)


# ---- provenance -------------------------------------------------------------------------------------------
def _sha256_files(paths, digest=None):
    digest = digest or hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
    return digest


def checkpoint_info(folder: Path) -> dict:
    """Path, name and sha256 of a checkpoint: its config without the model card (which evaluations append to)
    followed by every weights file, so the hash stays put when scores are added."""
    from horse.checkpoint_folder import read_config

    config = read_config(folder)
    weights = config.resolve(folder, config.weights)
    files = sorted(p for p in weights.rglob("*") if p.is_file()) if weights.is_dir() else [weights]
    described = {k: v for k, v in config.to_dict().items() if k not in ("model_card", "weights")}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    return {"path": str(Path(folder).resolve()), "name": _entry_name(folder),
            "sha256": _sha256_files(files, digest).hexdigest()}


def _git_commit() -> str | None:
    """HEAD's commit read from .git (no git process)."""
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if not ref.startswith("ref: "):
            return ref
        name = ref[5:]
        loose = REPO_ROOT / ".git" / name
        if loose.is_file():
            return loose.read_text().strip()
        for line in (REPO_ROOT / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + name):
                return line.split()[0]
    except OSError:  # no readable git metadata (e.g. an installed copy): the source hash identifies the code
        return None
    return None


def code_version() -> dict:
    files = sorted(p for d in SOURCE_DIRS for p in (REPO_ROOT / d).rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return {"git_commit": _git_commit(), "source_sha256": digest.hexdigest()[:16], "source_files": len(files)}


def hardware(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
            "device": str(device), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["accelerator"] = torch.cuda.get_device_name(torch.device(device))
    return info


# ---- model card -------------------------------------------------------------------------------------------
def append_model_card(folder: Path, entry: dict) -> None:
    """Append ``entry`` to ``config.json``'s ``model_card.evaluations`` atomically (locked read-modify-replace).

    horse.checkpoint_folder has no updater for one field, so this is a small one: the file is re-validated
    through ``CheckpointConfig.from_dict`` and replaced with ``write_file_atomic``.
    """
    from horse.checkpoint_folder import CONFIG_FILE, CheckpointConfig
    from horse.pipeline.media import write_file_atomic

    path = Path(folder) / CONFIG_FILE
    with open(Path(folder) / f".{CONFIG_FILE}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text())
        card = data.setdefault("model_card", {})
        card.setdefault("evaluations", []).append(entry)
        CheckpointConfig.from_dict(data, source=str(path))
        write_file_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def _card_entry(results: dict, results_path: Path) -> dict:
    return {"suite": results["suite"], "size": results["size"], "created": results["created"],
            "results": str(results_path.resolve()), "checkpoint_sha256": results["checkpoint"]["sha256"],
            "settings": {k: results["settings"].get(k) for k in ("clips", "sampler")},
            "scores": {group: {name: s["value"] for name, s in g["scores"].items()}
                       for group, g in results["groups"].items()}}


# ---- running ----------------------------------------------------------------------------------------------
def evaluate(cfg, checkpoint: str | Path, out_dir: Path) -> dict:
    """Run ``cfg.suite`` on one checkpoint; writes results.json and report.html into ``out_dir``."""
    from eval.report import write_report, write_results
    from eval.suites import SuiteContext, load_suite

    checkpoint = Path(checkpoint).expanduser()
    suite = load_suite(cfg.suite.name)
    info = checkpoint_info(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = SuiteContext(checkpoint=checkpoint, out_dir=out_dir, device=str(cfg.device), progress=cfg.progress)
    start = datetime.datetime.now(datetime.timezone.utc)
    output = suite.run(cfg, context)
    results = {"suite": cfg.suite.name, "size": cfg.size.name,
               "created": start.isoformat(timespec="seconds"), "checkpoint": info,
               "code_version": code_version(), "hardware": hardware(cfg.device),
               "config": OmegaConf.to_container(cfg, resolve=True), **output}
    path = write_results(results, out_dir / RESULTS_FILE)
    write_report(results, out_dir / REPORT_FILE)
    if cfg.update_model_card:
        try:
            append_model_card(checkpoint, _card_entry(results, path))
        except OSError as err:  # e.g. a read-only release folder: the results stand on their own
            print(f"eval: could not append to {checkpoint}'s model card ({err}); scores are in {path}",
                  file=sys.stderr)
    return results


def _load_or_evaluate(cfg, entry, out_dir: Path) -> dict:
    path = Path(str(entry)).expanduser()
    if path.is_dir() and (path / RESULTS_FILE).is_file():
        path = path / RESULTS_FILE
    if path.name == RESULTS_FILE and path.is_file():
        results = json.loads(path.read_text())
        results["_folder"] = str(path.parent.resolve())
        return results
    results = evaluate(cfg, path, out_dir)
    results["_folder"] = str(out_dir.resolve())
    return results


def run(cfg, out_dir: str | Path | None = None) -> Path:
    """Evaluate ``cfg.checkpoint``, or every entry of ``cfg.checkpoints`` and compare them; returns the report."""
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    out_dir = Path(out_dir)
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    if cfg.get("checkpoints"):
        if cfg.get("checkpoint"):
            raise ValueError("give either checkpoint=DIR or checkpoints=[A,B,...], not both")
        entries = list(cfg.checkpoints)
        if len(entries) < 2:
            raise ValueError(f"checkpoints= compares two or more entries, got {entries}; use checkpoint=DIR for one")
        names = [_entry_name(e) for e in entries]
        if len(set(names)) != len(names):
            names = [f"{i}-{n}" for i, n in enumerate(names)]
        runs = [_load_or_evaluate(cfg, e, out_dir / n) for e, n in zip(entries, names)]
        from eval.compare import compare_runs
        from eval.report import write_comparison_report, write_results

        comparison = compare_runs(runs, out_dir)
        write_results(comparison, out_dir / COMPARISON_FILE)
        report = write_comparison_report(comparison, out_dir / REPORT_FILE)
    elif cfg.get("checkpoint"):
        evaluate(cfg, cfg.checkpoint, out_dir)
        report = out_dir / REPORT_FILE
    else:
        raise ValueError("no checkpoint given: run 'python eval.py suite=NAME checkpoint=DIR' "
                         "(or checkpoints=[A,B] to compare)")
    print(f"eval: report at {report}")
    return report
