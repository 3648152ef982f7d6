"""PCA of h per timestep (Haas et al.) and a supervised mean-difference direction, applied as Δh_t tables.

    python -m jaxhspace.main --config configs/pca.py --workdir runs/pca

Official: 500 DDPM samples, 10 steps, 25 components, ±5 std at every step, symmetric edits. Here the
h's come from DDIM inversions of real SynthFaces (whose factors we know, so the supervised direction
needs no classifier).
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("pca")
    c.pca_source = "synthfaces"  # where the h's come from: "synthfaces" | "samples" (the model's own) | "images"
    c.pca_data_seed = 777      # SynthFaces seed (or the x_T / noise seed of "samples")
    c.num_pca_samples = 128
    c.pca_eta = 1.0            # with "samples": DDIM η of the generations (Haas: η = 1, DDPM)
    c.pca_batch_size = 16      # inversions / generations per batch
    c.pca_image_paths = ()     # with pca_source="images": faces to invert instead
    c.n_steps = 20
    c.k = 8
    c.n_dirs = 3
    c.supervised_factor = "smile"
    c.supervised_pos_paths = ()  # with a source other than SynthFaces: images with / without the attribute
    c.supervised_neg_paths = ()
    c.scales = (-3.0, 3.0)
    c.t_edit = 0               # every step (Haas); set e.g. 500 for Asyrp-style editing
    c.t_boost = 0
    c.symmetric = True
    return c
