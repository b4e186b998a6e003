"""bench.gpu_check's logic on the CPU (--smoke): every stage runs, and one failing stage costs only itself."""
import json

import pytest


def test_smoke_run_writes_every_stage_and_survives_a_failing_one(tmp_path, monkeypatch):
    from bench import gpu_check

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "nucleus_methods", broken)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--smoke", "--skip", "e2e", "train", "profile", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bf16_vs_fp32"]["top1_agreement"] >= 0.5
    assert [r["batch_rows"] for r in res["scaling"]] == [16, 64] and all(r["images_per_s"] > 0 for r in res["scaling"])
    assert res["nucleus"] == {"error": "RuntimeError: CUDA error: an illegal memory access was encountered"}
    assert set(res["stage_s"]) == {"bf16_vs_fp32", "scaling", "nucleus"} and res["prefixes"] == "random"


def test_profile_stage_says_where_the_pipeline_spends_its_time(tmp_path):
    from bench import gpu_check

    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--smoke", "--skip", "bf16", "scaling", "nucleus", "e2e", "train", "--out", str(out)]) == 0
    prof = json.loads(out.read_text())["profile"]
    assert prof["sampler"]["wall_s"] > 0 and prof["sampler"]["top_cpu_ops"]
    ranges, stages = prof["end_to_end"]["ranges_s"], prof["end_to_end"]["stage_seconds"]
    # the main thread's ranges in the profile of a real (tiny) explain_dataset; every stage's seconds in its manifest
    assert {"texplain.wait_for_images", "texplain.classify_translate", "texplain.sample"} <= set(ranges)
    assert 0 < ranges["texplain.sample"] <= prof["end_to_end"]["wall_s"]
    assert {"total", "wait_for_images", "classify_translate", "sample", "count_words", "write_shard"} <= set(stages)
    assert 0 < stages["sample"] < stages["total"]
    assert "texplain.sample" in (tmp_path / "profile_end_to_end.txt").read_text()
    assert (tmp_path / "profile_sampler.txt").stat().st_size > 0


def test_without_cuda_a_full_run_is_refused(capsys):
    import torch

    from bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA GPU here" in capsys.readouterr().err
