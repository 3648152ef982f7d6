"""An official-format ADM-variant Asyrp editor (the ``dog_*`` / ``metface_*`` kind) on its official-format base, a
guided-diffusion ``UNetModel`` with learned variance (the AFHQ-dog / MetFaces family): our edited output (h + s·Δh
decoded with the unedited skips) equals the official h2 path of Asyrp_official improved_ddpm/unet.py:697-743
(``h2 = h * hs_coeff[0] + layer_0(h, emb) * hs_coeff[1]``, decoded with the unedited ``hs``), computed with the
independent torch references (tests/guided_diffusion_reference.py for the base, tests/asyrp_editor_reference.py for
the editor)."""
import jax
import numpy as np
import torch

from asyrp_editor_reference import ADMDeltaBlock, official_pth, perturb_
from guided_diffusion_reference import create_model, timestep_embedding
from jaxhspace.checkpoints import load_unet
from jaxhspace.checkpoints.guided_diffusion import convert_guided_diffusion
from jaxhspace.editing.editor_io import load_editor

# the Asyrp AFHQ / MetFaces family in miniature: scale-shift norm, ResBlock up/down, head channels, learned sigma
TINY = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
            num_head_channels=16, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)
TOL, REGRESSION = 1e-4, 3e-5


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))


def test_official_adm_editor_on_guided_diffusion_base(tmp_path, scale=-0.7):
    torch.manual_seed(0)
    base = create_model(**TINY).eval()
    with torch.no_grad():  # the official init zeroes several output convs: perturb every tensor
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    src = str(tmp_path / "afhq_dog_tiny.pt")
    torch.save(base.state_dict(), src)
    torch.manual_seed(1)
    layer_0 = perturb_(ADMDeltaBlock(64, 128), seed=2)  # setattr_layers: C = ch of the last level, emb = 4 * 32
    with torch.no_grad():
        layer_0.out_layers[3].weight.mul_(4.0)  # a larger Δh, so the edit visibly moves the output
    pth = str(tmp_path / "dog_happy_LC_dog_t999_ninv40_ngen40_0.pth")
    official_pth(pth, layer_0)

    convert_guided_diffusion(src, str(tmp_path / "base"), arch=TINY)
    model, params = load_unet(str(tmp_path / "base"))
    editor, eparams, _ = load_editor(pth)
    assert editor.config.variant == "adm" and (editor.config.channels, editor.config.temb_dim) == (64, 128)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    t = np.array([10, 700])

    @jax.jit
    def edited(p, ep, x, t):
        h, skips, temb = model.apply({"params": p}, x, t, method=model.encode)
        dh = editor.apply({"params": ep}, h, temb)
        return model.apply({"params": p}, h + scale * dh, skips, temb, method=model.decode)

    ours = np.asarray(edited(params, eparams, x, t))
    with torch.no_grad():
        _, h = base(_nchw(x), torch.from_numpy(t), return_h=True)
        emb = base.time_embed(timestep_embedding(torch.from_numpy(t), base.model_channels))
        plain = base(_nchw(x), torch.from_numpy(t))
        h2 = base(_nchw(x), torch.from_numpy(t), delta_h=scale * layer_0(h, emb))  # h*1 + layer_0(h, emb)*scale
    ref, plain = h2.permute(0, 2, 3, 1).numpy(), plain.permute(0, 2, 3, 1).numpy()
    err_eps = np.abs(ours[..., :3] - ref[..., :3]).max()
    err_full = np.abs(ours - ref).max()
    moved = np.abs(ref[..., :3] - plain[..., :3]).max()
    print(f"\n[Asyrp ADM editor on guided-diffusion base, s={scale}] edited eps err {err_eps:.2e}, full output "
          f"(eps + variance channels) err {err_full:.2e} (edit moved eps by {moved:.2f})", end="")
    assert ours.shape[-1] == 6 and moved > 0.2
    assert err_eps <= TOL and err_full <= TOL
    assert err_full <= REGRESSION

    # The Asyrp step's (ε, ε̃) pair on this learned-variance base: ε channels only, equal to the reference's.
    from jaxhspace.editing.asyrp_edit import eps_pair_fn
    pair = eps_pair_fn(model, params, lambda h, temb, tb: editor.apply({"params": eparams}, h, temb), scale)
    eps, eps_e = (np.asarray(a) for a in pair(x, t, np.array([True, True])))
    assert eps.shape[-1] == 3 and eps_e.shape[-1] == 3
    assert np.abs(eps - plain[..., :3]).max() <= TOL and np.abs(eps_e - ref[..., :3]).max() <= TOL
