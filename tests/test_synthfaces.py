"""SynthFaces generator: determinism, shapes, factor independence, captions, bad input."""
import numpy as np
import pytest

from jaxhspace.data import synthfaces as sf


@pytest.mark.parametrize("size", [32, 64])
def test_generate_shapes_ranges_dtypes(size):
    images, factors = sf.generate(0, 10, size)
    assert images.shape == (10, size, size, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and np.all(np.isfinite(images))
    assert set(factors) == set(sf.FACTORS)
    for name, f in sf.FACTORS.items():
        v = factors[name]
        assert v.shape == (10,)
        if f.kind == "continuous":
            assert v.dtype == np.float32 and v.min() >= f.low and v.max() <= f.high
        else:
            assert v.dtype == np.int32 and v.min() >= 0 and v.max() < f.num_classes
    assert images.std() > 0.2  # not blank


def test_deterministic_per_seed():
    a_img, a_f = sf.generate(123, 16)
    b_img, b_f = sf.generate(123, 16)
    c_img, _ = sf.generate(124, 16)
    np.testing.assert_array_equal(a_img, b_img)
    for k in a_f:
        np.testing.assert_array_equal(a_f[k], b_f[k])
    assert not np.array_equal(a_img, c_img)
    np.testing.assert_array_equal(sf.render(a_f), a_img)


def test_sizes_agree():
    """64x64 is the same picture as 32x32 at finer pixels."""
    img32, f = sf.generate(5, 8, 32)
    img64 = sf.render(f, 64).reshape(8, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(img64 - img32).mean() < 0.03


def test_factors_independent_and_cover_range():
    f = sf.sample_factors(7, 20000)
    names = list(sf.FACTORS)
    mat = np.stack([f[k].astype(np.float64) for k in names])
    corr = np.corrcoef(mat)
    off = corr[~np.eye(len(names), dtype=bool)]
    assert np.abs(off).max() < 0.04
    for name, spec in sf.FACTORS.items():
        if spec.kind != "continuous":
            counts = np.bincount(f[name], minlength=spec.num_classes)
            assert counts.min() > 0.8 * 20000 / spec.num_classes


def test_smile_only_changes_the_mouth():
    _, f = sf.generate(3, 32)
    g = dict(f, smile=-f["smile"])
    diff = np.abs(sf.render(f) - sf.render(g)).max(-1)  # [N, H, W]
    changed = diff > 1e-4
    assert changed.any(axis=(1, 2))[np.abs(f["smile"]) > 0.1].all()
    # The change is confined to a small area around the mouth.
    assert changed.mean() < 0.03
    rows = np.nonzero(changed.any(axis=(0, 2)))[0]
    assert rows.min() >= 14  # never above the eyes


def test_captions_reflect_factors():
    f = sf.sample_factors(0, 3)
    f["smile"][:] = [0.8, -0.8, 0.0]
    f["hair_color"][:] = [sf.HAIR_COLORS.index("blue"), sf.HAIR_COLORS.index("blonde"), 0]
    f["glasses"][:] = [1, 0, 0]
    f["eye_size"][:] = [0.9, 0.5, 0.1]
    f["background"][:] = [0, 1, 2]
    caps = sf.captions(f)
    assert caps[0] == "a smiling face with blue hair, big eyes and glasses on a gray background"
    assert caps[1] == "a frowning face with blonde hair on a teal background"
    assert caps[2].startswith("a neutral face with black hair and small eyes")
    assert "glasses" not in caps[1] and "background" not in sf.caption({k: v[0] for k, v in f.items()}, False)
    assert sf.smile_word(sf.SMILE_THRESHOLD + 1e-3) == "smiling"
    assert sf.smile_word(-sf.SMILE_THRESHOLD - 1e-3) == "frowning"


def test_dataset_batches_seeded_and_infinite():
    ds = sf.SynthFacesDataset(base_seed=11, batch_size=4, with_captions=True)
    it = iter(ds)
    b0, b1 = next(it), next(it)
    assert b0["images"].shape == (4, 32, 32, 3) and len(b0["captions"]) == 4
    np.testing.assert_array_equal(b1["images"], ds[1]["images"])
    np.testing.assert_array_equal(b0["images"], sf.generate((11, 0), 4)[0])
    assert not np.array_equal(b0["images"], b1["images"])
    resumed = next(iter(sf.SynthFacesDataset(base_seed=11, batch_size=4, start=1)))
    np.testing.assert_array_equal(resumed["smile"], b1["smile"])


@pytest.mark.parametrize("kwargs", [dict(size=48), dict(size=0), dict(n=0), dict(n=-3), dict(n=2.5)])
def test_bad_input(kwargs):
    args = dict(seed=0, n=2, size=32) | kwargs
    with pytest.raises(ValueError):
        sf.generate(**args)


def test_bad_factors():
    f = sf.sample_factors(0, 2)
    with pytest.raises(ValueError):
        sf.render({k: v for k, v in f.items() if k != "smile"})
    with pytest.raises(ValueError):
        sf.render(dict(f, smile=np.array([2.0, 0.0], np.float32)))
    with pytest.raises(ValueError):
        sf.render(dict(f, hair_color=np.array([0, 9])))
    with pytest.raises(ValueError):
        sf.SynthFacesDataset(batch_size=0)
    with pytest.raises(ValueError):
        sf.sample_factors(0, 0)
