"""bench.gpu_check's logic on the CPU (--smoke): every stage runs, and one failing stage costs only itself."""
import json

import pytest


def test_smoke_run_writes_every_stage_and_survives_a_failing_one(tmp_path, monkeypatch):
    from bench import gpu_check

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "nucleus_methods", broken)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--smoke", "--skip", "e2e", "train", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bf16_vs_fp32"]["top1_agreement"] >= 0.5
    assert [r["batch_rows"] for r in res["scaling"]] == [16, 64] and all(r["images_per_s"] > 0 for r in res["scaling"])
    assert res["nucleus"] == {"error": "RuntimeError: CUDA error: an illegal memory access was encountered"}
    assert set(res["stage_s"]) == {"bf16_vs_fp32", "scaling", "nucleus"} and res["prefixes"] == "random"


def test_without_cuda_a_full_run_is_refused(capsys):
    import torch

    from bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA GPU here" in capsys.readouterr().err
