"""Loading into a meta-built module must cost ~ model + one shard of RAM, never 2x the model.

Measured in a fresh interpreter via VmHWM (the peak RSS of its own address space). ru_maxrss is not used: Linux
carries the parent's RSS at fork into the child's ru_maxrss, so a big pytest process would mask the load's peak.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from horse.checkpoint import save_state_dict_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
N_LAYERS, IN_FEATURES, OUT_FEATURES = 16, 4096, 1024  # 16 x 16 MiB fp32 = 256 MiB
MODEL_BYTES = N_LAYERS * IN_FEATURES * OUT_FEATURES * 4
N_SHARDS = 4
MAX_GROWTH = 1.5  # x model size; a load that held the whole checkpoint next to the model would need >= 2x

CHILD = textwrap.dedent(f"""
    import json, sys
    import torch
    from torch import nn
    from horse.checkpoint import load_state_dict_folder
    torch.set_num_threads(1)
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear({IN_FEATURES}, {OUT_FEATURES}, bias=False) for _ in range({N_LAYERS})])
    def peak_rss_kib():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
    try:  # reset the peak to the current RSS (Linux >= 4.0); otherwise the post-import peak is the baseline
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    baseline_kib = peak_rss_kib()
    load_state_dict_folder(model, sys.argv[1])
    peak_kib = peak_rss_kib()
    still_mapped = [line for line in open("/proc/self/maps") if sys.argv[1] in line]
    sums = {{k: v.double().sum().item() for k, v in model.state_dict().items()}}
    print(json.dumps({{"growth_bytes": (peak_kib - baseline_kib) * 1024, "sums": sums, "mapped": still_mapped}}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
@pytest.mark.parametrize("compress_zstd", [False, True], ids=["plain", "zst"])
def test_meta_load_peak_rss_is_model_plus_one_shard(tmp_path, compress_zstd):
    g = torch.Generator().manual_seed(0)
    sd = {f"{i}.weight": torch.rand(OUT_FEATURES, IN_FEATURES, generator=g) for i in range(N_LAYERS)}
    expected_sums = {k: v.double().sum().item() for k, v in sd.items()}
    save_state_dict_folder(sd, tmp_path / "ckpt", max_shard_bytes=MODEL_BYTES // N_SHARDS,
                           compress_zstd=compress_zstd, fsync=False)
    del sd
    assert len(list((tmp_path / "ckpt").glob("model-*"))) == N_SHARDS

    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "ckpt")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result["sums"] == pytest.approx(expected_sums, rel=1e-12)
    # The weights must live in process memory, not in a lazy map of a file that could change under the model.
    assert result["mapped"] == []
    growth = result["growth_bytes"] / MODEL_BYTES
    assert growth > 0.9, f"RSS grew only {growth:.2f}x the model: the measurement is not seeing the loaded weights"
    assert growth < MAX_GROWTH, f"loading used {growth:.2f}x the model size in RAM (limit {MAX_GROWTH}x)"
