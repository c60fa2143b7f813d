"""results.json, the HTML reports and the Markdown summary, from synthetic shapes_av results (no generation)."""

import html
import json
import math

import numpy as np
import pytest

from eval.compare import compare_runs
from eval.report import markdown_summary, write_comparison_report, write_report, write_results
from eval.suites.shapes_av import summarise_groups
from horse.data.shapes import ShapesConfig
from horse.metrics.shapes_av import SCORES

CONFIG = ShapesConfig()
PROMPT = "a small red circle moves up quickly on a grey background & beeps <low> at each bounce. motion score: {m}"


def fake_clip_scores(rng, good: bool, wanted: float) -> dict:
    hit = lambda: float(rng.random() < (0.9 if good else 0.3))  # noqa: E731
    measured = wanted if good else float(rng.choice([0.1, 0.9]))
    f1 = float(rng.random()) if good else 0.0
    return {"colour_correct": hit(), "shape_correct": hit(), "size_correct": hit(), "direction_correct": hit(),
            "pitch_correct": hit(), "motion_score_requested": wanted, "motion_score_measured": measured,
            "motion_abs_error": abs(measured - wanted), "sync_precision": f1, "sync_recall": f1,
            "sync_f1": f1, "count_error": float(rng.integers(0, 3))}


def fake_results(name: str, good: bool, n: int = 10) -> dict:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        clip_id = f"test_{i:07d}"
        reference = fake_clip_scores(np.random.default_rng(100 + i), True, wanted=[0.3, 0.5, 0.8][i % 3])
        reference.update({k: 1.0 for k in reference if k.endswith("_correct")})
        clips.append({"id": clip_id, "index": i, "held_out": i % 2 == 1,
                      "group": "held_out" if i % 2 else "in_distribution",
                      "prompt": PROMPT.format(m=reference["motion_score_requested"]),
                      "video": f"clips/{clip_id}.mp4", "reference": f"reference/{clip_id}.mp4",
                      "scores": {**fake_clip_scores(rng, good, reference["motion_score_requested"]),
                                 **({"sync_f1": None} if i % 4 == 0 else {})},
                      "detected": {},
                      "reference_scores": reference, "reference_detected": {"bounce_frames": [3, 9][: 1 + i % 2]}})
    groups = summarise_groups(clips, CONFIG)
    for clip in clips:
        clip.pop("reference_detected")
    return {"suite": "shapes_av", "size": "ci", "created": "2025-01-01T00:00:00+00:00",
            "checkpoint": {"path": f"/ckpt/{name}", "name": name, "sha256": "0" * 64},
            "code_version": {"git_commit": None, "source_sha256": "abc"}, "hardware": {"device": "cpu"},
            "config": {"suite": {"name": "shapes_av"}}, "settings": {"clips": n, "sampler": {"sampler": "euler"}},
            "groups": groups, "clips": clips, "timings": {"total_s": math.nan}}


def test_results_json_is_strict_json_with_nan_as_null(tmp_path):
    results = fake_results("a", True)
    results["_private"] = "dropped"
    path = write_results(results, tmp_path / "results.json")
    text = path.read_text()
    loaded = json.loads(text)  # strict: no NaN tokens
    assert "NaN" not in text and loaded["timings"]["total_s"] is None and "_private" not in loaded
    assert loaded["groups"]["all"]["scores"]["sync_f1"]["n"] < 10  # clips without a defined F1 are left out


def test_report_contains_every_clip_and_score(tmp_path):
    results = fake_results("model-a", True)
    page = write_report(results, tmp_path / "report.html").read_text()
    for clip in results["clips"]:
        assert f'src="{clip["video"]}"' in page and f'src="{clip["reference"]}"' in page
        assert html.escape(clip["prompt"]) in page and clip["id"] in page
    for group, entry in results["groups"].items():
        assert f"{group} (n={entry['n']})" in page
        for name, score in entry["scores"].items():
            assert name in page
            if score["value"] is not None:
                assert f"{score['value']:.3f}" in page
    assert "<low>" not in page  # prompts are escaped
    assert page.count("data:image/png;base64,") == 2  # score panels + motion scatter


def test_comparison_flags_a_significant_improvement(tmp_path):
    runs = [fake_results("weak", False, n=40), fake_results("strong", True, n=40)]
    for run in runs:
        run["_folder"] = str(tmp_path / run["checkpoint"]["name"])
    comparison = compare_runs(runs, tmp_path)
    scores = comparison["comparisons"][0]["groups"]["all"]
    assert scores["colour_accuracy"]["difference"] > 0.3 and scores["colour_accuracy"]["significant"]
    assert scores["colour_accuracy"]["better"] is True
    assert scores["motion_abs_error"]["difference"] < 0 and scores["motion_abs_error"]["better"] is True
    assert scores["motion_correlation"]["baseline"] is None or scores["motion_correlation"]["difference"] > 0
    page = write_comparison_report(comparison, tmp_path / "report.html").read_text()
    for clip in comparison["clips"]:
        assert clip["videos"] == [f"weak/clips/{clip['id']}.mp4", f"strong/clips/{clip['id']}.mp4"]
        assert all(f'src="{v}"' in page for v in clip["videos"])
    for name in SCORES:
        assert name in page
    with pytest.raises(ValueError, match="share no clips"):
        other = fake_results("x", True, n=3)
        other["clips"] = [{**c, "id": "other_" + c["id"]} for c in other["clips"]]
        other["_folder"] = str(tmp_path)
        compare_runs([runs[0], other], tmp_path)


def test_markdown_summary_lists_every_score_with_its_interval():
    results = fake_results("a", True)
    text = markdown_summary(results)
    for group, entry in results["groups"].items():
        assert f"**{group}** (n={entry['n']})" in text
        for name, score in entry["scores"].items():
            assert f"| {name} " in text
            if score["ci"][0] is not None:
                assert f"[{score['ci'][0]:.3f}, {score['ci'][1]:.3f}]" in text
