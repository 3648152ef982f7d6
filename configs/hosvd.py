"""HOSVD/Tucker vs matrix SVD of the pullback Jacobian J = ∂h/∂x: energy per parameter and edits.

    python -m jaxhspace.main --config configs/hosvd.py --workdir runs/hosvd

For the 32x32 models (x = 32x32x3, h = 8x8xC): (spatial, channel) modes on both sides give input
dims (1024, 3) and output dims (64, C); the "axes" choice uses one mode per axis. Rank choices are
``(out_modes, out_ranks, in_modes, in_ranks)``; each is compared with the rank-k SVD of equal size.
Edits use the separable HOSVD directions of choice ``edit_choice`` (spatial factor ⊗ colour factor)
against the top SVD directions, with the pullback job's edit settings.
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("hosvd", num_images=2)
    c.n_steps = 50             # Asyrp grid for inversion / sampling
    c.edit_t = 600
    c.t_boost = 200
    c.chunk_size = None        # JacobianOperator chunking (memory bound)
    # shared SVD stage (also the exact part of every Tucker model's mode Grams)
    c.svd_k = 16               # raised automatically to cover the largest parameter-matched rank
    c.svd_method = "krylov"
    c.svd_tol = 1e-3
    c.svd_max_iters = 30
    # Tucker models
    c.rank_choices = (
        ("spatial_channel", (8, 8), "spatial_channel", (8, 3)),
        ("spatial_channel", (16, 16), "spatial_channel", (16, 3)),
        ("spatial_channel", (16, 16), "spatial_channel", (32, 3)),
        ("axes", (4, 4, 16), "axes", (8, 8, 3)),
    )
    c.n_probes = 16            # Hutchinson completion of the mode Grams on the SVD complement
    c.hooi_iters = 1
    c.exact_norm_max_dim = 0   # ||J||_F^2 estimated (min(m, n) = 3072 products for the exact value)
    c.hosvd_chunk = 64
    # edits
    c.edit_choice = 0
    c.n_dirs = 3
    c.gamma = 0.5
    c.lam = 10.0
    c.n_edit_steps = 16
    return c
