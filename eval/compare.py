"""Compare eval runs of several checkpoints on the same clips: every score's difference to the first (baseline)
run with a paired bootstrap interval and a paired permutation-test p-value (``horse.metrics.stats``)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

SIGNIFICANCE_LEVEL = 0.05  # a difference with p below this is flagged significant


def _clips_by_id(results: dict) -> dict:
    return {c["id"]: c for c in results["clips"]}


def compare_scores(baseline: dict, other: dict) -> dict:
    """``{group: {score: {"baseline", "other", "difference", "ci", "p_value", "n", "significant", "better"}}}``."""
    from horse.metrics.stats import ScoreSpec, compare_paired

    if baseline["suite"] != other["suite"]:
        raise ValueError(f"cannot compare a {baseline['suite']} run with a {other['suite']} run")
    base_clips, other_clips = _clips_by_id(baseline), _clips_by_id(other)
    shared = [cid for cid in base_clips if cid in other_clips]
    if not shared:
        raise ValueError("the two runs share no clips (different sizes or datasets?); evaluate them with the same "
                         "suite settings")
    out = {}
    for group, entry in baseline["groups"].items():
        if group not in other["groups"]:
            continue
        ids = [cid for cid in shared if group == "all" or base_clips[cid]["group"] == group]
        scores = {}
        for name, score in entry["scores"].items():
            spec = ScoreSpec(score["kind"], tuple(score["keys"]), score["higher_is_better"])
            pairs = [(base_clips[c]["scores"], other_clips[c]["scores"]) for c in ids]
            pairs = [(a, b) for a, b in pairs if spec.defined(a) and spec.defined(b)]
            a = spec.values([p[0] for p in pairs])
            b = spec.values([p[1] for p in pairs])
            result = compare_paired(spec.kind, a, b)
            diff, p = result["difference"], result["p_value"]
            significant = p is not None and p < SIGNIFICANCE_LEVEL
            better = None if diff is None or diff == 0 else (diff > 0) == spec.higher_is_better
            scores[name] = {"baseline": score["value"], "other": other["groups"][group]["scores"][name]["value"],
                            **result, "significant": significant, "better": better,
                            "higher_is_better": spec.higher_is_better}
        out[group] = scores
    return out


def compare_runs(runs: list[dict], out_dir: Path) -> dict:
    """Comparison of ``runs[1:]`` against ``runs[0]``, with clip paths relative to ``out_dir``."""
    out_dir = Path(out_dir)
    names = [r["checkpoint"]["name"] for r in runs]
    if len(set(names)) != len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]

    def rel(run: dict, path: str | None) -> str | None:
        if path is None:
            return None
        return os.path.relpath(Path(run["_folder"]) / path, out_dir)

    clips = []
    for clip in runs[0]["clips"]:
        videos = [rel(r, _clips_by_id(r).get(clip["id"], {}).get("video")) for r in runs]
        clips.append({"id": clip["id"], "group": clip["group"], "prompt": clip["prompt"],
                      "reference": rel(runs[0], clip.get("reference")), "videos": videos,
                      "scores": [_clips_by_id(r).get(clip["id"], {}).get("scores") for r in runs]})
    return {
        "suite": runs[0]["suite"], "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "significance_level": SIGNIFICANCE_LEVEL,
        "runs": [{"name": n, "checkpoint": r["checkpoint"], "settings": r.get("settings"), "size": r.get("size"),
                  "report": rel(r, "report.html"),
                  "groups": {g: {s: v["value"] for s, v in e["scores"].items()} for g, e in r["groups"].items()}}
                 for n, r in zip(names, runs)],
        "comparisons": [{"baseline": names[0], "other": names[i], "groups": compare_scores(runs[0], runs[i])}
                        for i in range(1, len(runs))],
        "clips": clips,
        "same_settings": all(r.get("settings") == runs[0].get("settings") for r in runs),
    }
