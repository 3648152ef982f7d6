"""Train an Asyrp editor on the iDDPM AFHQ-dog model (``afhq_dog_4m.pt``) with the official settings for dogs
(kwonminki/Asyrp_official@a6c82dc).

    python -m jaxhspace.main --config configs/afhq_dog/asyrp_train.py --workdir runs/afhq_dog_happy \
        --config.model_path=/data/pretrained/afhq_dog_4m.pt --config.clip_path=/data/clip-vit-base-patch32 \
        --config.image_paths="('/data/afhq/train/dog',)"

What differs from configs/celebahq256/asyrp_train.py:

* model: kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:13 (``pretrained/afhq_dog_4m.pt``), loaded as i_DDPM
  with learned variance (…:diffusion_latent.py:109-115); the ``.pt`` is converted on the fly with preset ``afhq_dog``
  (…:models/improved_ddpm/script_util.py:5-22 AFHQ_DICT; ``checkpoints_convert.guided_diffusion``).
* editor: the ADM DeltaBlock (kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:776-853; GN + SiLU + 1×1
  conv, emb_layers, out_layers), the variant of the released ``checkpoint/dog_*_LC_dog_t999_ninv40_ngen40_0.pth``.
* texts: ``dog_happy`` = 'Dog' -> 'Happy Dog' (kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:120-121; other dog
  pairs at 80-139).
* t_edit 444: the first t with LPIPS(P_t, x0) ≥ 0.3 in
  kwonminki/Asyrp_official@a6c82dc:utils/afhq_LPIPS_distance_x0_t.tsv:444, recorded as ``'afhq': 444`` in
  …:utils/t_edit_dic.py:5 (the official threshold is 0.33·cos(src, tgt), …:diffusion_latent.py:1334, i.e. 0.3 for cos ≈
  0.91; other thresholds: 0.2 -> 242, 0.25 -> 353, 0.28 -> 412, 0.33 -> 482). Set ``t_edit=-1`` with ``lpips_path`` to
  select it per text pair as the official code does.
* t_boost 167: the first t with LPIPS(x_t, x0) ≥ 1.2 (``--add_noise_from_xt --lpips_addnoise_th 1.2``,
  kwonminki/Asyrp_official@a6c82dc:README.md:152-153) in …:utils/afhq_LPIPS_distance_x.tsv:167.

Unchanged (same for dogs in the official code and the released dog checkpoints' optimiser state): SGD lr 0.5, StepLR(20,
0.9) (stored in ``checkpoint/dog_happy_LC_dog_t999_ninv40_ngen40_0.pth``), λ_CLIP 1, λ_L1 3
(kwonminki/Asyrp_official@a6c82dc:script_train.sh:32-34), n_inv = n_train = 40 (the released ``ninv40_ngen40``), 100
training images (…:script_train.sh:16), the 79 imagenet templates.
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_train import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_train import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/afhq_dog_4m.pt"   # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "afhq_dog"
    # ADM DeltaBlock: kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:776-853
    c.editor_variant = "adm"
    c.src_text = "Dog"           # dog_happy: kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:120-121
    c.tgt_text = "Happy Dog"
    # LPIPS 0.3: kwonminki/Asyrp_official@a6c82dc:utils/t_edit_dic.py:5, …:utils/afhq_LPIPS_distance_x0_t.tsv:444
    c.t_edit = 444
    # LPIPS 1.2 (--add_noise_from_xt): kwonminki/Asyrp_official@a6c82dc:utils/afhq_LPIPS_distance_x.tsv:167
    c.t_boost = 167
    return c
