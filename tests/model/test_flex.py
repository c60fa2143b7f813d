import torch

from horse.model.attention import packed_attention


def test_flex_backend_equals_sdpa_per_sample():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(300, 4, 32, generator=g), torch.randn(300, 2, 32, generator=g), torch.randn(300, 2, 32,
                                                                                                        generator=g)
    lens = [100, 120, 80]
    ref = packed_attention(q, k, v, lens)
    out = packed_attention(q, k, v, lens, backend="flex")
    assert ((out - ref).abs().max() / ref.abs().max()) < 1e-5
    # and it is block-diagonal: one sample alone gives the same rows
    alone = packed_attention(q[100:220], k[100:220], v[100:220], [120])
    assert torch.allclose(out[100:220], alone, atol=1e-5)
