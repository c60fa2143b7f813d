import json
import re

import pytest
import torch

from eval.suites import SuiteContext
from eval.suites import prompts as suite
from horse.metrics.text_metrics import is_cjk

TINY_MODEL = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}
CI = {"limit": 2, "generation": {"duration": 1, "fps": 8, "steps": 1, "sampler": "euler", "seed": 0}}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from horse.pipeline import init_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpts")
    return [init_checkpoint(root / name, seed=seed, model=TINY_MODEL) for name, seed in (("a", 0), ("b", 1))]


def test_committed_prompt_set_covers_the_release_languages_in_the_enhanced_format():
    data = suite.load_prompt_set()
    prompts = data["prompts"]
    assert len(prompts) == 12 and len({p["id"] for p in prompts}) == 12
    assert {p["language"] for p in prompts} == {"en", "zh", "yue", "ja", "ko", "de", "fr"}
    for p in prompts:
        parsed = suite.parse_enhanced_prompt(p["prompt"])
        assert parsed.main and parsed.background and parsed.dialogue
        assert not any(is_cjk(c) for c in parsed.main)  # the main body is English
        assert parsed.speech == " ".join(p["speech"])
        if p["language"] in ("zh", "yue", "ja", "ko"):
            assert any(is_cjk(c) for c in parsed.speech)


def test_parse_enhanced_prompt_by_hand():
    text = ('A man talks.\n\nDialogue:\n<Man, English, calm>: "Hello there."\n<Woman, English>: "Hi, "you"."\n\n'
            "Background Sound:\n<Rain.>")
    p = suite.parse_enhanced_prompt(text)
    assert p.main == "A man talks." and p.background == "Rain."
    assert p.dialogue == [("Man, English, calm", "Hello there."), ("Woman, English", 'Hi, "you".')]
    with pytest.raises(ValueError, match="Background Sound"):
        suite.parse_enhanced_prompt("A man talks.\nDialogue:\n<Man>: \"hi\"")
    with pytest.raises(ValueError, match="not of the form"):
        suite.parse_enhanced_prompt("x\nDialogue:\nMan says hi\nBackground Sound:\n<r>")


def test_size_overrides_merge_generation_settings():
    cfg = {"suite": {"limit": None, "generation": {"seed": 3, "steps": 32}, "sizes": {"ci": CI}},
           "size": {"name": "ci"}}
    s = suite.suite_settings(cfg)
    assert s["limit"] == 2 and s["generation"] == {**CI["generation"], "seed": 0} and "sizes" not in s


def test_run_writes_side_by_side_grid(checkpoints, tmp_path):
    a, b = checkpoints
    cfg = {"suite": {"prompt_set": "human_dialogue_v1", "compare": [str(b)], "sizes": {"ci": CI}},
           "size": {"name": "ci"}}
    result = suite.run(cfg, SuiteContext(checkpoint=a, out_dir=tmp_path, progress=False))
    first_two = [p["id"] for p in suite.load_prompt_set()["prompts"][:2]]
    assert [c["id"] for c in result["clips"]] == [f"a/{i}" for i in first_two] + [f"b/{i}" for i in first_two]
    for clip in result["clips"]:
        assert (tmp_path / clip["video"]).stat().st_size > 0
    page = (tmp_path / result["settings"]["grid"]).read_text()
    srcs = re.findall(r'<video[^>]*src="([^"]+)"', page)
    assert srcs == ["clips/a/" + first_two[0] + ".mp4", "clips/b/" + first_two[0] + ".mp4",
                    "clips/a/" + first_two[1] + ".mp4", "clips/b/" + first_two[1] + ".mp4"]
    assert "Dialogue:" in page and "<th>a</th><th>b</th>" in page
    assert sum(g["n"] for g in result["groups"].values()) == 4
    json.dumps(result)
