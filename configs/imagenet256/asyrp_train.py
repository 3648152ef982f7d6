"""Train an Asyrp editor on the unconditional ADM ImageNet 256 model (``256x256_diffusion_uncond.pt``)
(kwonminki/Asyrp_official@a6c82dc).

    python -m jaxhspace.main --config configs/imagenet256/asyrp_train.py --workdir runs/imagenet_orange2apple \
        --config.model_path=/data/pretrained/256x256_diffusion_uncond.pt \
        --config.clip_path=/data/clip-vit-base-patch32 --config.image_paths="('/data/imagenet_oranges100',)"

What differs from configs/celebahq256/asyrp_train.py:

* model: kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:16, loaded as i_DDPM("IMAGENET") with learned variance
  (…:diffusion_latent.py:109-115); preset ``imagenet256_uncond`` (the file's own guided-diffusion flags; Asyrp's
  IMAGENET_DICT says class_cond but never feeds a label), converted on the fly. h = ``middle_block`` output,
  8×8×1024.
* editor: the ADM DeltaBlock (kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:776-853) on 1024 channels.
* texts: ``orange2apple`` = 'a photo of an orange' -> 'a photo of an apple'
  (kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:209; the other ImageNet pairs at 208-221). The official code picks
  training images of one class with ``--target_class_num`` (kwonminki/Asyrp_official@a6c82dc:script_train.sh:43); here
  give that class's images in ``image_paths``.
* t_edit 500 / t_boost 200: no ``utils/imagenet_LPIPS_*.tsv`` is shipped, so the official code needs
  ``--user_defined_t_edit 500 --user_defined_t_addnoise 200``
  (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1341-1351; …:script_train.sh:25-26).

Unchanged: SGD lr 0.5 (kwonminki/Asyrp_official@a6c82dc:script_train.sh:32), StepLR(20, 0.9), λ_CLIP 1, λ_L1 3
(…:script_train.sh:33-34), n_inv = n_train = 40, 100 training images (…:script_train.sh:16).
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_train import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_train import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/256x256_diffusion_uncond.pt"   # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "imagenet256_uncond"
    # ADM DeltaBlock: kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:776-853
    c.editor_variant = "adm"
    # orange2apple: kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:209
    c.src_text = "a photo of an orange"
    c.tgt_text = "a photo of an apple"
    return c
