"""Data-parallel Asyrp editor training: 3 steps of the jitted editor step (asymmetric step + CLIP directional loss +
L1, backprop through the UNet decoder and CLIP) wrapped by ``parallel.data_parallel_step`` on 4 fake CPU devices
(global batch 8, split along B) give the same losses and editor params as the plain 1-device step.

As in tests/test_parallel.py the multi-device work runs in one subprocess (XLA_FLAGS must precede importing jax)."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.test_parallel import N_DEV, run_on_fake_devices  # noqa: E402

TOL = 1e-5


def _worker() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_default_matmul_precision", "highest")
    from jaxhspace import parallel as par
    from jaxhspace.diffusion.schedule import make_schedule
    from jaxhspace.editing.asyrp_train import AsyrpTrainState, make_train_step, optimizer_from_spec
    from jaxhspace.models.clip import CLIPConfig, CLIPModel, init_clip_params
    from jaxhspace.models.editor import DeltaBlock, EditorConfig, init_editor
    from jaxhspace.models.unet import UNet2DModel, UNetConfig
    from tests.test_parallel import TINY, numpy_params

    assert len(jax.devices()) == N_DEV
    unet = UNet2DModel(UNetConfig.from_dict(TINY))
    uparams = numpy_params(unet, 16)
    clip = CLIPModel(CLIPConfig.from_dict({
        "projection_dim": 16,
        "text_config": dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=8, projection_dim=16),
        "vision_config": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=16)}))
    cparams = init_clip_params(clip, jax.random.PRNGKey(1))
    editor = DeltaBlock(EditorConfig.for_unet(unet.config, num_groups=4))
    eparams = init_editor(editor, jax.random.PRNGKey(2))
    spec = ("sgd", 0.05, 3, 20, 0.9, 0.0)
    step = make_train_step(unet, editor, clip, spec, 1.0, 3.0)
    text_dir = jax.random.normal(jax.random.PRNGKey(3), (16,))
    frozen = {"unet": uparams, "clip": cparams, "text_dir": text_dir / jnp.linalg.norm(text_dir),
              "cos": jnp.float32(1.0), "schedule": make_schedule()}
    x_lat = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (8, 16, 16, 3)))
    feat = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (8, 16)))
    grid = [(999, 856), (856, 713), (713, 570)]

    def run(fn):
        p = jax.tree.map(jnp.copy, eparams)
        st = AsyrpTrainState(jnp.array(0, jnp.int32), p, optimizer_from_spec(spec).init(p),
                             jnp.zeros(x_lat.shape, jnp.float32), jnp.zeros(x_lat.shape, jnp.float32))
        losses = []
        for i, (t, tp) in enumerate(grid):
            st, m = fn(st, frozen, x_lat, feat, jnp.int32(t), jnp.int32(tp), jnp.bool_(i == 0))
            losses.append([float(m["loss"]), float(m["clip"]), float(m["l1"])])
        return losses, st

    l_ref, st_ref = run(step)
    mesh = par.make_mesh()
    l4, st4 = run(par.data_parallel_step(step, mesh, batch_argnums=(2, 3)))
    diff = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))  # noqa: E731
    return {"losses": [l_ref, l4], "loss_diff": diff(l4, l_ref),
            "params_diff": max(diff(a, b) for a, b in zip(jax.tree.leaves(st4.params), jax.tree.leaves(st_ref.params))),
            "x_edit_diff": diff(st4.x_edit, st_ref.x_edit) / max(1.0, float(np.max(np.abs(np.asarray(st_ref.x_edit))))),
            "params_moved": max(diff(a, b) for a, b in zip(jax.tree.leaves(st_ref.params), jax.tree.leaves(eparams)))}


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def results():
    return run_on_fake_devices(__file__, timeout=900)


def test_data_parallel_editor_steps_match_one_device(results):
    assert results["loss_diff"] <= TOL * max(1.0, abs(results["losses"][0][0][0])), results["losses"]
    assert results["params_moved"] > 1e-4  # the three steps did train the editor
    assert results["params_diff"] <= TOL and results["x_edit_diff"] <= TOL  # x_edit: relative to max |x_edit|


if __name__ == "__main__":
    print("RESULTS " + json.dumps(_worker()), flush=True)
