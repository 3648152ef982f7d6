"""checkpoints_convert.diffusers_unet carries the noise schedule through (issue #18, item 4): a cosine-schedule
model samples the same from its diffusers folder and from the converted one; the schedule is checked against
diffusers' own DDIMScheduler, and converting a folder without any scheduler config warns that one is assumed."""
import os

import jax
import numpy as np
import pytest

from checkpoints_convert import diffusers_unet as convert_cli
from jaxhspace.diffusion.ddim import ddim_sample
from jaxhspace.diffusion.schedule import ddim_timesteps
from jaxhspace.models.functional import eps_fn
from jaxhspace.world import load_model
from tests.unet_fixtures import make_torch_unet

TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[8, 16], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
            flip_sin_to_cos=False, freq_shift=1, act_fn="silu")


@pytest.fixture(scope="module")
def cosine_folder(tmp_path_factory):
    from diffusers import DDIMScheduler

    folder = str(tmp_path_factory.mktemp("cosine_unet"))
    make_torch_unet(TINY).save_pretrained(folder)
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False).save_pretrained(
        folder)
    return folder


def _sample(folder):
    model, params, schedule, _ = load_model(folder)
    x_T = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 3))
    return np.asarray(ddim_sample(eps_fn(model, params), x_T, ddim_timesteps(3), schedule)), schedule


def test_cosine_schedule_model_samples_the_same_after_conversion(cosine_folder, tmp_path):
    from diffusers import DDIMScheduler

    dst = str(tmp_path / "converted")
    convert_cli.main([cosine_folder, dst])
    assert os.path.isfile(os.path.join(dst, "scheduler_config.json"))
    before, s_before = _sample(cosine_folder)
    after, s_after = _sample(dst)
    ref = DDIMScheduler.from_pretrained(cosine_folder).alphas_cumprod.numpy()  # independent reference
    np.testing.assert_allclose(np.asarray(s_before.alphas_cumprod), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(s_after.alphas_cumprod), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_pipeline_folder_scheduler_is_carried(tmp_path):
    from diffusers import DDIMScheduler

    pipe = tmp_path / "pipe"
    make_torch_unet(TINY).save_pretrained(str(pipe / "unet"))
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(str(pipe / "scheduler"))
    dst = str(tmp_path / "converted")
    convert_cli.convert(str(pipe), dst)
    _, _, s_after, _ = load_model(dst)
    ref = DDIMScheduler.from_pretrained(str(pipe / "scheduler")).alphas_cumprod.numpy()
    np.testing.assert_allclose(np.asarray(s_after.alphas_cumprod), ref, rtol=1e-5, atol=1e-7)


def test_missing_scheduler_config_warns_loudly(tmp_path):
    src, dst = str(tmp_path / "bare"), str(tmp_path / "converted")
    make_torch_unet(TINY).save_pretrained(src)
    with pytest.warns(UserWarning, match=r"(?s)scheduler_config\.json.*linear"):
        convert_cli.convert(src, dst)
    with pytest.warns(UserWarning, match=r"(?s)no scheduler_config\.json.*linear"):
        load_model(dst)
