"""PCA of h per timestep (Haas et al.) on Stable Diffusion, and a supervised mean-difference global Δh from two image
sets (Asyrp-style global direction applied in the asymmetric reverse process with ``symmetric=False``).

    python -m jaxhspace.main --config configs/sd/pca.py --workdir runs/sd_pca \
        --config.model_path=/data/stable-diffusion-v1-5 --config.image_paths="('/data/faces',)" \
        --config.pca_image_paths="('/data/faces_train',)" \
        --config.supervised_pos_paths="('/data/smiling',)" --config.supervised_neg_paths="('/data/neutral',)"
"""
from jaxhspace.configs.pca import get_config as base


def get_config():
    c = base()
    c.model_family = "latent"
    c.model_path = ""          # REQUIRED: a local diffusers pipeline folder
    c.prompt = ""
    c.image_size = 0
    c.pca_source = "images"    # or "samples" (generations of the pipeline from noise, Haas' official source)
    c.pca_image_paths = ()
    c.supervised_factor = ""   # a name for the mean-difference direction of supervised_pos/neg_paths
    c.supervised_pos_paths = ()
    c.supervised_neg_paths = ()
    c.n_steps = 10
    c.upscale = 1
    return c
