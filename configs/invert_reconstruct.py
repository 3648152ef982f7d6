"""DDIM inversion + reconstruction error for several step counts.

    python -m jaxhspace.main --config configs/invert_reconstruct.py --workdir runs/invert
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "invert_reconstruct"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = ""
    c.seed = 0
    c.data_seed = 12345        # SynthFaces test faces (training uses other seeds)
    c.num_images = 8
    c.image_paths = ()         # or your own image files (centre-cropped and resized)
    c.n_steps_list = (10, 20, 50, 100)
    c.spacing = "asyrp"
    c.upscale = 4
    return c
