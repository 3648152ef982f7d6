"""Haas et al. PCA of h per timestep (get_PCs_indv) over the model's own samples, on a real 256×256 DDPM, applied
to your own faces as Δh_t = scale·std_t·u_t at every step (``get_PCs_indv``,
renhaa/semantic-diffusion@91f0a15:editing/pca.py:282-313; edits as …:README.md:53-55).

    python -m jaxhspace.main --config configs/celebahq256/pca.py --workdir runs/celebahq256_pca \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

Optional supervised direction (Haas' real-data variant,
renhaa/semantic-diffusion@91f0a15:editing/bu3dfe.py:53-113): mean h of the inverted
``supervised_pos_paths`` minus that of ``supervised_neg_paths`` (e.g. smiling vs neutral faces), over the
trajectory. Memory: the h's are [n_steps, num_pca_samples, 8, 8, 512] float32 (655 MB for 10 × 500).
Difference: the edits run on DDIM-inverted real faces with η = 0 (Haas edit generations with η = 1, fixed z's).
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.pca import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.pca import get_config as base


def get_config():
    c = official_checkpoint(base())
    # the model's own generations (pca.sample(num_samples=500, etas=1), renhaa/semantic-diffusion@91f0a15:README.md:48)
    c.pca_source = "samples"
    c.num_pca_samples = 500    # renhaa/semantic-diffusion@91f0a15:README.md:48
    c.n_steps = 10             # 10 DDIM steps (README / demo)
    c.k = 25                   # 25 components kept (renhaa/semantic-diffusion@91f0a15:editing/pca.py:282-313)
    c.supervised_factor = ""   # a name for the supervised direction (SynthFaces factor only for 32/64 px)
    c.scales = (-5.0, 5.0)     # ±5 std (renhaa/semantic-diffusion@91f0a15:README.md:53-55, linspace(-5, 5, 5))
    return c
