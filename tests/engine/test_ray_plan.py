"""How wide a Ray run may go, decided before any actor starts (core.engine.ray.cluster_plan): no Ray needed."""
from __future__ import annotations

import pytest

from core.engine.config import ExplainConfig
from core.engine.ray import ACTOR_PROCESS_BYTES, RayPlacement, actor_bytes, cluster_plan
from core.errors import RayClusterError

GiB = 2**30


def test_more_cpu_actors_than_cpus_is_refused_with_the_numbers():
    # explain --ray --workers 64 --cpus-per-worker 0.01 on two CPUs: 0.64 CPUs "fit", 64 processes do not.
    with pytest.raises(RayClusterError, match=r"64 CPU explainer actors on a cluster of 2 CPUs: .* use --workers 2 "
                                              r"or fewer"):
        cluster_plan({"CPU": 2.0, "memory": 64 * GiB}, RayPlacement(workers=64, cpus_per_worker=0.01), GiB)
    assert cluster_plan({"CPU": 2.0, "memory": 64 * GiB}, RayPlacement(workers=2, cpus_per_worker=0.5), GiB) == (2, 0.0)


def test_more_actors_than_memory_holds_is_refused_and_the_default_fits():
    with pytest.raises(RayClusterError, match=r"8 explainer actor\(s\) need about 12.0 GiB of memory \(1.5 GiB each: "
                                              r".*the cluster has 4.0 GiB for them: at most 2 fit; use --workers 2"):
        cluster_plan({"CPU": 32.0, "memory": 4 * GiB}, RayPlacement(workers=8), int(1.5 * GiB))
    assert cluster_plan({"CPU": 32.0, "memory": 4 * GiB}, RayPlacement(), int(1.5 * GiB)) == (2, 0.0)
    assert cluster_plan({"CPU": 32.0, "memory": 64 * GiB}, RayPlacement(), int(1.5 * GiB)) == (31, 0.0)


def test_gpu_actors_are_counted_against_the_gpus():
    assert cluster_plan({"CPU": 16.0, "GPU": 4.0, "memory": 100 * GiB}, RayPlacement(), GiB) == (4, 1.0)
    with pytest.raises(RayClusterError, match=r"8 explainer actor\(s\) x 1 GPU need 8 GPUs; the cluster has 4"):
        cluster_plan({"CPU": 16.0, "GPU": 4.0, "memory": 100 * GiB}, RayPlacement(workers=8), GiB)


def test_an_actor_counts_its_process_its_weights_and_on_cpu_its_sampler(tiny_classifier, tiny_lm):
    from core.models.translator import Translator, TranslatorConfig

    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2))
    weights = sum(p.numel() * 4 for m in (tiny_classifier.module, tr, tiny_lm.model) for p in m.parameters())
    on_gpu = actor_bytes(tiny_classifier, tr, tiny_lm, ExplainConfig(), on_gpu=True)
    assert on_gpu >= ACTOR_PROCESS_BYTES + weights
    small = actor_bytes(tiny_classifier, tr, tiny_lm, ExplainConfig(batch_rows=8), on_gpu=False)
    large = actor_bytes(tiny_classifier, tr, tiny_lm, ExplainConfig(batch_rows=4096), on_gpu=False)
    assert on_gpu < small < large
