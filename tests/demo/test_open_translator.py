"""The open translator's replay data (core.demo.open_translator.replay_data): the general world's training pairs
beside as many of the open world's, so that learning the open world does not forget the general one."""
import numpy as np

from tests.evaluation.test_openworld import small_open_world


def test_replay_mixes_every_general_pair_with_as_many_open_pairs(tmp_path, tiny_classifier):
    from core.demo.imagenet9 import general_translator_data
    from core.demo.open_translator import open_translator_data, replay_data
    from core.demo.worlds.general import build_general_world

    world, _, _ = small_open_world(tmp_path)
    general = build_general_world(tmp_path / "general", n_images=12, workers=1, verbose=False)
    gz, gcaps, _, _ = general_translator_data(tiny_classifier, general)
    oz, ocaps, ovz, ovcaps = open_translator_data(tiny_classifier, world)
    assert len(gcaps) < len(ocaps)  # so the open side is a draw, not all of it

    z, caps, val_z, val_caps = replay_data(tiny_classifier, world, general)
    assert len(caps) == 2 * len(gcaps) and z.shape == (len(caps), *oz.shape[1:])
    assert caps[len(gcaps):] == list(gcaps)
    assert np.allclose(z[len(gcaps):].numpy(), gz.numpy())
    open_part = caps[:len(gcaps)]
    assert set(open_part) <= set(ocaps) and len(set(open_part)) > 1
    # Each open caption keeps its own image's features.
    for i, c in enumerate(open_part[:5]):
        assert any(np.allclose(z[i].numpy(), oz[j].numpy()) for j in np.flatnonzero(np.array(ocaps) == c))
    # Validation is the open world's: the recipe is chosen on its held-out scenes and objects.
    assert val_caps == ovcaps and np.allclose(val_z.numpy(), ovz.numpy())
    # The same seed draws the same pairs.
    assert replay_data(tiny_classifier, world, general)[1] == caps
