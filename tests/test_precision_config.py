"""Issue #19 item 3: ``config.precision`` (default "highest") is read by ``jaxhspace.main``, sets JAX's default
matmul precision, and every job's metrics record it."""
import json
import os
import subprocess
import sys

import jax
import ml_collections
import pytest

import configs.sample as sample_cfg
from jaxhspace.precision import MATMUL_PRECISIONS, current_matmul_precision, set_matmul_precision
from jaxhspace.tasks import get_task
from tests.unet_fixtures import make_torch_unet

TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_job_metrics_record_the_precision_set_from_the_config(tmp_path):
    make_torch_unet(TINY, seed=0).save_pretrained(str(tmp_path / "unet"))
    c = sample_cfg.get_config()
    assert c.precision == "highest"
    c.model_path, c.num_samples, c.grid_cols, c.n_steps, c.precision = str(tmp_path / "unet"), 1, 1, 2, "high"
    before = jax.config.jax_default_matmul_precision
    try:
        assert set_matmul_precision(c) == "high" and current_matmul_precision() == "high"
        m = get_task("sample")(c, str(tmp_path / "wd"))
        assert m["precision"] == "high"
        assert json.load(open(tmp_path / "wd" / "metrics.json"))["precision"] == "high"
        assert set_matmul_precision(ml_collections.ConfigDict({"task": "x"})) == "highest"  # a config without it
        with pytest.raises(ValueError, match="precision"):
            set_matmul_precision("float16")
    finally:
        jax.config.update("jax_default_matmul_precision", before)
    assert "highest" in MATMUL_PRECISIONS


def test_main_reads_precision_before_running_the_job(tmp_path):
    """A bad name fails in main before the job starts (no model loaded: model_path does not exist)."""
    r = subprocess.run([sys.executable, "-m", "jaxhspace.main", "--config", os.path.join(ROOT, "configs/sample.py"),
                        "--workdir", str(tmp_path), "--config.precision=fp8", "--config.model_path=/nonexistent"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode != 0 and "config.precision='fp8'" in r.stderr, r.stderr[-2000:]
