"""Smoke test of benchmarks/throughput.py and its PyTorch re-implementation of the official Asyrp loop
(benchmarks/torch_asyrp.py) on an 8x8 random-init UNet: all three measurements at the smallest setting, the JSON
fields, and that torch and ours give the same edited images and training losses. No timing is asserted."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from benchmarks import throughput as B  # noqa: E402


@pytest.fixture(scope="module")
def result():
    threads = torch.get_num_threads()
    try:
        yield B.run_benchmark("smoke", min_time=0.0, threads=1, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)


def test_torch_loop_gives_our_images(result):
    """Same inversions, constant Δh injected at the mid-block output by a forward hook, the same boosting noise:
    the per-image, per-step torch loop and our one vmapped program agree to float32 rounding."""
    e = result["edit"]
    assert e["n_images"] == 2 and e["n_test"] == 4 and e["edited_steps"] == 2  # grid [999, 666, 333, 0]
    assert e["torch_unet_forwards_per_image"] == 6 and e["jax_passes_per_image"] == {"encoder": 4, "decoder": 6}
    assert e["max_abs_diff_clipped"] < 1e-4
    assert e["max_abs_diff"] < 1e-5 * max(1.0, e["max_abs_image"])  # random-init edits leave [-1, 1]
    assert e["max_abs_diff_ours_vs_torch64"] < 1e-5 * max(1.0, e["max_abs_image"])  # both at the float32 floor


def test_training_steps_agree(result):
    t = result["train"]
    assert t["steps_per_walk"] == 2 and t["timesteps"] == [999, 666] and t["batch_size"] == 1
    assert t["loss_max_rel_diff"] < 1e-4  # step 1 (loss) and step 2 (after one SGD update of the editor)
    assert np.all(np.isfinite(t["first_losses_jax"]))


def test_json_fields_and_report(result, tmp_path):
    r = result
    assert r["agreement"]["eps_max_abs_diff"] < 1e-4
    assert [f["batch"] for f in r["forward"]] == [1, 2]
    for part in r["forward"] + [r["edit"], r["train"]]:
        for side in ("jax", "torch"):
            assert part[side]["wall_s"] > 0 and part[side]["cpu_s"] >= 0 and part[side]["reps"] >= 2
        assert part["jax"]["compile_s"] >= 0 and part["ratio_ours_over_torch"] > 0
    assert r["forward"][0]["jax"]["images_per_s"] > 0 and r["train"]["torch"]["steps_per_s"] > 0
    env = r["environment"]
    assert {"jax_device", "dtype", "threads", "versions", "cpu"} <= set(env)
    assert env["threads"]["torch_num_threads"] == 1 and env["dtype"] == "float32"
    js, md = B.write_results(r, str(tmp_path / "t.json"))
    loaded = json.loads(open(js).read())
    assert loaded["config"] == "smoke" and set(loaded) >= {"forward", "edit", "train", "environment", "agreement"}
    text = open(md).read()
    for row in ("| (a) UNet forward | batch 2 |", "| (b) Asyrp edit |", "| (c) editor training |"):
        assert row in text


def test_device_summary():
    d = B.device_summary()
    assert d["device_count"] >= 1 and d["platform"] and d["default_float_dtype"] == "float32" and "memory_stats" in d
