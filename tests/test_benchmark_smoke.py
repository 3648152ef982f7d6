"""Smoke test of benchmarks/jacobian_svd.py and the PyTorch re-implementation of the official
Diffusion-Pullback loop, on an 8x8 random-init UNet (n = 192, h = 2x2x4, m = 16)."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("scipy")

from benchmarks import jacobian_svd as B  # noqa: E402
from jaxhspace.directions.pullback import pullback_operator  # noqa: E402


@pytest.fixture(scope="module")
def smoke():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the benchmark's default; torch's OpenMP pool crawls on a busy machine
    setup = B.build_setup("smoke")
    op = pullback_operator(setup.model, setup.params, jnp.asarray(setup.x), setup.t)
    gt = B.dense_ground_truth(op, k_max=op.dim_out - 1)
    yield setup, op, gt
    torch.set_num_threads(threads)


def test_official_matches_dense_svd_when_it_converges(smoke):
    """k = m = rank(J): the official loop is exact after two iterations (V then spans J's row space), so
    its singular values and right vectors must match the dense float64 SVD; chunking (k = 16, chunk 10)
    and the NCHW -> NHWC conversion are exercised too. Only triplets with σ_i >= 1e-2 σ_1 are compared:
    the official s = sqrt(svals(U^T J)) squares the condition number in float32, so a near-null
    direction of J cannot be resolved that way."""
    setup, op, gt = smoke
    k = op.dim_out
    run = B.run_official(setup, k, seed=0, max_iter=2, min_iter=0, chunk_size=10, warmup=False)
    assert run.iterations == 2 and run.n_jvp == run.n_vjp == 2 * k and run.n_fwd == 3
    ok = gt["s"][:k] >= 1e-2 * gt["s"][0]
    assert ok.sum() >= k - 2
    acc = B.evaluate(run, gt, op)
    rel = np.asarray(acc["sigma_rel_err"])[ok]
    assert rel.max() <= 1e-3, rel
    assert np.asarray(acc["angle_deg"])[ok].max() < 1.0  # right singular vectors, after sign alignment


def test_benchmark_produces_table_and_json(smoke, tmp_path):
    setup, op, gt = smoke
    opts = B.Options(k=2, official_max_iter=2, official_min_iter=0, krylov_max_iters=4, subspace_max_iters=4,
                     verbose=False, lanczos_blocks=(1, 2))
    h_check = B.check_h_agree(setup)
    assert h_check["max_abs_diff"] <= B.H_ATOL
    fe = B.forward_costs(setup)
    rows = B.run_methods(setup, op, opts.k, gt, fe, opts)
    res = B.assemble(setup, opts, op, gt, rows, h_check, B.environment(fe), dict(first=0.0, warm=0.0), 0.0)
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["official(k=2)", "ours:krylov", "ours:subspace", "ours:krylov@eq-acc",
                       "ours:krylov@eq-acc-per-triplet", "ours:lanczos(b=1)", "ours:lanczos(b=2)", "scipy.svds(arpack)"]
    assert res["sizes"]["n"] == 192 and res["sizes"]["m"] == 16
    off = res["rows"][0]
    assert off["n_jvp"] == off["n_vjp"] == 2 * off["iterations"] and off["n_fwd"] == off["iterations"] + 1
    for r in res["rows"]:
        assert len(r["sigma_rel_err"]) == len(r["angle_deg"]) == len(r["rel_residual"]) == 2
        assert r["products"] == r["n_jvp"] + r["n_vjp"] > 0
    assert res["rows"][1]["rel_residual_max"] < 1e-2  # ours: converged to tol 1e-3 (explicit residuals)
    report = B.render_report(res)
    assert "| official(k=2) |" in report and "Per triplet" in report
    path = tmp_path / "out.json"
    B.write_json(res, str(path))
    loaded = json.loads(path.read_text())
    assert loaded["config"] == "smoke" and len(loaded["rows"]) == 8
    for r in res["rows"][5:7]:  # Lanczos (tol 1e-6): converged, explicit residuals small, overhead reported
        assert r["converged"] and r["rel_residual_max"] < 1e-4 and r["sigma_rel_err_max"] < 1e-4
        assert r["products"] == 2 * r["block_size"] * r["iterations"] and "overhead" in r
    assert "Lanczos solver overhead" in report
    assert {"versions", "threads", "dtype"} <= set(loaded["environment"])


def test_batched_lanczos_row(smoke):
    """B = 2 images in one batched Lanczos loop and in one vmapped call equal the sequential calls (σ and product
    counts)."""
    setup, _, _ = smoke
    row = B.batched_row(setup, k=2, n_images=2, seed=0, tol=1e-6, reps=1)
    assert row["all_converged"] and row["max_sigma_rel_diff_batched_vs_seq"] < 1e-5
    assert row["max_sigma_rel_diff_vmap_vs_seq"] < 1e-5 and row["speedup"] > 0 and row["speedup_vmap"] > 0
    assert row["products_per_image"] == row["batched_products_per_image"]


def test_accelerator_script_runs_small_on_cpu(tmp_path):
    """benchmarks/accelerator.py end to end at 8x8 (k 2, B 2, 4 steps): table, JSON, ours vs torch edit agree."""
    from benchmarks import accelerator as A

    out = tmp_path / "acc.json"
    assert A.main(["--config", "smoke", "--size", "8", "--k", "2", "--batch", "2", "--batch-k", "2", "--n-test", "4",
                   "--jvp-block", "2", "--blocks", "1,2", "--reps", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    names = [r["name"] for r in res["rows"]]
    assert names[:4] == ["UNet forward", "encoder forward x -> h", "JVP block", "VJP block"]
    lz = [r for r in res["rows"] if r["name"] == "Lanczos SVD"]
    assert len(lz) == 2 and all(r["converged"] and r["products"] > 0 for r in lz)
    assert res["asyrp_max_abs_diff_ours_vs_torch"] < 1e-3
    assert "Asyrp edit (official loop" in A.render(res)
    bat = {r["name"]: r for r in res["rows"]}
    assert bat["batched Lanczos SVD"]["products_per_image"] == bat["batched Lanczos SVD"]["sequential_products"]
    assert bat["batched Lanczos SVD"]["max_sigma_rel_diff_vs_sequential"] < 1e-5
    assert bat["vmapped Lanczos SVD"]["products_per_image"] == bat["batched Lanczos SVD"]["sequential_products"]
