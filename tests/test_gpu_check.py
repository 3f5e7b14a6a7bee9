"""bench/gpu_check.py runs on the CPU too (a small grid): every figure it prints is computed and plausible."""

import json
import math

from bench import gpu_check
from lib.learn.models import default_device


def test_gpu_check_runs_on_this_device_and_reports_every_figure(tmp_path, capsys):
    out_file = tmp_path / "gpu_check.json"
    args = ["--grid", "65", "77", "65", "--train-volumes", "2", "--batch-size", "2", "--volumes", "2",
            "--agree-volumes", "1", "--occlusion-volumes", "1", "--occlusion-stride-mm", "40", "--json", str(out_file)]
    assert gpu_check.main(args) == 0
    out = json.loads(out_file.read_text())
    printed = capsys.readouterr().out
    assert out["grid"] == [65, 77, 65]
    assert (default_device().type == "cuda") == out["training"]["mixed_precision"]   # chosen automatically
    assert len(out["training"]["epoch_volumes_per_s"]) == 2
    rates = [*out["training"]["epoch_volumes_per_s"], *(r["volumes_per_s"] for r in out["explain"].values())]
    assert all(math.isfinite(r) and r > 0 for r in rates)
    assert set(out["explain"]) == {"LRP β=0", "LRP β=0.5", "guided backprop", "occlusion (batched)"}
    # the same maps in float32 and float64 (on CUDA: on the GPU and on the CPU)
    assert set(out["agreement_rel_l2"]) == {"LRP β=0", "LRP β=0.5", "guided backprop"}
    assert all(0 <= d < 1e-4 for d in out["agreement_rel_l2"].values()), out["agreement_rel_l2"]
    assert all(r["peak_mib"] > 0 for r in out["explain"].values())
    for label in out["explain"]:
        assert label in printed
    assert "volumes/s" in printed and "total" in printed
