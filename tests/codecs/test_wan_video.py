"""Wan2.2 VAE codec: key mapping against the published names, and a tiny checkpoint in the published layout."""

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402

from horse.codecs.key_maps import WAN22_VAE_KEYS_FILE, load_published_keys  # noqa: E402
from horse.codecs.key_maps.wan22_vae import diffusers_to_original, original_to_diffusers  # noqa: E402
from horse.codecs.wan_video import WAN22_VAE_CONFIG, WanVideoCodec  # noqa: E402

Z = 4
TINY = dict(base_dim=8, decoder_base_dim=12, z_dim=Z, num_res_blocks=1,
            latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[0.5, 1.5, 0.8, 2.0])  # fmt: skip


def test_mapping_reproduces_the_published_checkpoint_names_and_shapes():
    published = load_published_keys(WAN22_VAE_KEYS_FILE)
    with torch.device("meta"):
        vae = AutoencoderKLWan(**WAN22_VAE_CONFIG)
    ours = {name: tuple(value.shape) for name, value in vae.state_dict().items()}
    forward = {original_to_diffusers(name): shape for name, shape in published.items()}
    assert forward == ours  # every published tensor lands on a diffusers tensor of the same shape
    inverse = {diffusers_to_original(name, WAN22_VAE_CONFIG["num_res_blocks"]): shape for name, shape in ours.items()}
    assert inverse == published
    assert len(WAN22_VAE_CONFIG["latents_mean"]) == len(WAN22_VAE_CONFIG["latents_std"]) == 48
    assert published["conv1.weight"] == (96, 96, 1, 1, 1)  # posterior projection: 2 x z_dim 48
    assert published["encoder.conv1.weight"][1] == 12  # 3 colours x 2x2 pixel patch


# Same-shaped tensors could be swapped by a mapping and still pass the name/shape check above: pin the
# routes whose meaning matters (published module order: norm, act, conv, norm, act, dropout, conv).
@pytest.mark.parametrize(
    "published, diffusers",
    [
        ("conv1.bias", "quant_conv.bias"),
        ("conv2.weight", "post_quant_conv.weight"),
        ("encoder.downsamples.1.downsamples.0.residual.2.weight", "encoder.down_blocks.1.resnets.0.conv1.weight"),
        ("encoder.downsamples.1.downsamples.1.residual.6.weight", "encoder.down_blocks.1.resnets.1.conv2.weight"),
        ("encoder.downsamples.1.downsamples.0.residual.3.gamma", "encoder.down_blocks.1.resnets.0.norm2.gamma"),
        ("encoder.downsamples.1.downsamples.2.time_conv.weight", "encoder.down_blocks.1.downsampler.time_conv.weight"),
        ("decoder.upsamples.0.upsamples.3.resample.1.weight", "decoder.up_blocks.0.upsampler.resample.1.weight"),
        ("decoder.upsamples.2.upsamples.0.shortcut.bias", "decoder.up_blocks.2.resnets.0.conv_shortcut.bias"),
        ("decoder.middle.2.residual.0.gamma", "decoder.mid_block.resnets.1.norm1.gamma"),
        ("encoder.middle.1.to_qkv.weight", "encoder.mid_block.attentions.0.to_qkv.weight"),
        ("encoder.head.2.weight", "encoder.conv_out.weight"),
        ("decoder.head.0.gamma", "decoder.norm_out.gamma"),
    ],
)
def test_mapping_routes(published, diffusers):
    assert published in load_published_keys(WAN22_VAE_KEYS_FILE)
    assert original_to_diffusers(published) == diffusers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny AutoencoderKLWan and the same weights saved in the published layout."""
    torch.manual_seed(0)
    source = AutoencoderKLWan(**{**WAN22_VAE_CONFIG, **TINY}).eval()
    with torch.no_grad():
        for p in source.parameters():  # RMS-norm gammas start at 1: perturb everything so a wrong route shows
            p.add_(torch.randn_like(p) * 0.1)
    published = {diffusers_to_original(k, TINY["num_res_blocks"]): v.clone() for k, v in source.state_dict().items()}
    path = tmp_path_factory.mktemp("wan") / "Wan2.2_VAE.pth"
    torch.save(published, path)
    return source, published, path


def test_from_pth_loads_every_tensor_where_it_belongs(tiny):
    source, _, path = tiny
    codec = WanVideoCodec.from_pth(path, config=TINY)
    loaded, expected = codec.vae.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(loaded[name], expected[name], rtol=0, atol=0, msg=name)


def test_encode_normalises_the_posterior_mean_and_decode_inverts_it(tiny):
    source, _, path = tiny
    codec = WanVideoCodec.from_pth(path, config=TINY)
    torch.manual_seed(1)
    pixels = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    latents = codec.encode(pixels)
    assert latents.shape == (1, Z, 2, 2, 3) and latents.dtype == torch.float32
    assert codec.latent_shape(5, 32, 48) == (Z, 2, 2, 3)
    mean = torch.tensor(TINY["latents_mean"]).view(1, Z, 1, 1, 1)
    std = torch.tensor(TINY["latents_std"]).view(1, Z, 1, 1, 1)
    with torch.no_grad():
        h = source.encode(pixels).latent_dist.parameters  # [B, 2z, ...]: mean then log-variance
        torch.testing.assert_close(latents, (h[:, :Z] - mean) / std)
        pixels_out = codec.decode(latents)
        reference = source.decode(h[:, :Z]).sample
    assert pixels_out.shape == (1, 3, 5, 32, 48)
    assert pixels_out.min() >= -1 and pixels_out.max() <= 1
    torch.testing.assert_close(pixels_out, reference.clamp(-1, 1), rtol=1e-4, atol=1e-5)


def test_a_single_frame_image_encodes_to_one_latent_frame(tiny):
    codec = WanVideoCodec.from_pth(tiny[2], config=TINY)
    assert codec.encode(torch.zeros(2, 3, 1, 16, 16)).shape == (2, Z, 1, 1, 1)


def test_bad_checkpoints_and_inputs_are_clear_errors(tiny, tmp_path):
    _, published, _ = tiny
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        WanVideoCodec.from_pth(tmp_path / "missing.pth", config=TINY)
    broken = dict(published)
    broken["encoder.extra.weight"] = torch.zeros(1)
    del broken["decoder.head.2.bias"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"(?s)encoder\.extra\.weight.*decoder\.conv_out\.bias"):
        WanVideoCodec.from_pth(tmp_path / "broken.pth", config=TINY)
    with pytest.raises(ValueError, match="shape"):  # the full-size config does not fit tiny weights
        WanVideoCodec.from_pth(tiny[2])
    codec = WanVideoCodec.from_pth(tiny[2], config=TINY)
    with pytest.raises(ValueError, match="4k\\+1"):
        codec.encode(torch.zeros(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="multiples of 16"):
        codec.encode(torch.zeros(1, 3, 1, 16, 24))
