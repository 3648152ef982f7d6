"""Train an Asyrp editor on the P2-weighting MetFaces model (``metface_p2.pt``) with the official settings for
MetFaces (kwonminki/Asyrp_official@a6c82dc).

    python -m jaxhspace.main --config configs/metfaces/asyrp_train.py --workdir runs/metfaces_smiling \
        --config.model_path=/data/pretrained/metface_p2.pt --config.clip_path=/data/clip-vit-base-patch32 \
        --config.image_paths="('/data/metfaces_train100',)"

What differs from configs/celebahq256/asyrp_train.py:

* model: kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:18 (``pretrained/metface_p2.pt``), loaded as
  guided_Diffusion with learned variance (…:diffusion_latent.py:117-120); preset ``metfaces_p2``
  (…:models/guided_diffusion/script_util.py:10-27, METFACE_DICT), converted on the fly.
* editor: the ADM DeltaBlock (kwonminki/Asyrp_official@a6c82dc:models/guided_diffusion/unet.py:779-856), the
  variant of the released ``checkpoint/metface_*_LC_metfaces_t999_ninv40_ngen40_0.pth``.
* texts: ``metface_smiling`` = 'painting of a person' -> 'painting of a Smiling person'
  (kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:192-193; angry / surprised / sad / disgusted at 194-201).
* t_edit 320: the first t with LPIPS(P_t, x0) ≥ 0.3 in
  kwonminki/Asyrp_official@a6c82dc:utils/metface_LPIPS_distance_x0_t.tsv:320 (threshold 0.33·cos(src, tgt),
  …:diffusion_latent.py:1334, ≈ 0.3 for cos ≈ 0.91, as …:utils/t_edit_dic.py:1-6 records for the other datasets;
  0.2 -> 97, 0.25 -> 179, 0.28 -> 262, 0.33 -> 396). Set ``t_edit=-1`` with ``lpips_path`` to select it per pair.
* t_boost 180: the first t with LPIPS(x_t, x0) ≥ 1.2 (kwonminki/Asyrp_official@a6c82dc:README.md:152-153) in
  …:utils/metface_LPIPS_distance_x.tsv:180.

Unchanged: SGD lr 0.5, StepLR(20, 0.9) (stored in ``checkpoint/metface_smiling_LC_metfaces_t999_ninv40_ngen40_0.pth``),
λ_CLIP 1, λ_L1 3 (kwonminki/Asyrp_official@a6c82dc:script_train.sh:32-34), n_inv = n_train = 40 (``ninv40_ngen40``),
100 training images.
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_train import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_train import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/metface_p2.pt"    # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "metfaces_p2"
    # ADM DeltaBlock: kwonminki/Asyrp_official@a6c82dc:models/guided_diffusion/unet.py:779-856
    c.editor_variant = "adm"
    # metface_smiling: kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:192-193
    c.src_text = "painting of a person"
    c.tgt_text = "painting of a Smiling person"
    # LPIPS 0.3: kwonminki/Asyrp_official@a6c82dc:utils/metface_LPIPS_distance_x0_t.tsv:320
    c.t_edit = 320
    # LPIPS 1.2 (--add_noise_from_xt): kwonminki/Asyrp_official@a6c82dc:utils/metface_LPIPS_distance_x.tsv:180
    c.t_boost = 180
    return c
