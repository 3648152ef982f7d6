"""PCA of h per timestep (Haas et al.) and a supervised mean-difference direction, applied as Δh_t tables.

    python -m jaxhspace.main --config configs/pca.py --workdir runs/pca

Official: 500 DDPM samples, 10 steps, 25 components, ±5 std at every step, symmetric edits. Here the
h's come from DDIM inversions of real SynthFaces (whose factors we know, so the supervised direction
needs no classifier).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "pca"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = ""
    c.seed = 0
    c.data_seed = 12345
    c.pca_data_seed = 777
    c.num_pca_samples = 128
    c.num_images = 4
    c.image_paths = ()
    c.n_steps = 20
    c.k = 8
    c.n_dirs = 3
    c.supervised_factor = "smile"
    c.scales = (-3.0, 3.0)
    c.t_edit = 0               # every step (Haas); set e.g. 500 for Asyrp-style editing
    c.t_boost = 0
    c.symmetric = True
    c.upscale = 3
    return c
