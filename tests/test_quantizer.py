import torch

from libcem.generative.models.quantizer import EMCodebook, ProductCodebook, kmeans, nearest_code


def blobs(centres: torch.Tensor, per: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per)
    return centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=g), labels


def as_grid(points: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, D, 1, 1): the quantizer takes feature maps."""
    return points[:, :, None, None]


def test_nearest_code_is_argmin_distance():
    g = torch.Generator().manual_seed(1)
    z, codes = torch.randn(50, 3, generator=g), torch.randn(7, 3, generator=g)
    assert torch.equal(nearest_code(z, codes), torch.cdist(z, codes).argmin(1))


def test_online_em_recovers_known_centres():
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]])
    q = EMCodebook(size=4, dim=2, decay=0.9, restart_after=1000).train()
    g = torch.Generator().manual_seed(0)
    for step in range(30):
        pts, _ = blobs(centres, 64, 0.3, seed=step)
        q(as_grid(pts), g)
    dist = torch.cdist(q.codebook, centres)
    assert dist.min(0).values.max() < 0.1  # every true centre has a code within 0.1
    assert torch.equal(dist.argmin(1).sort().values, torch.arange(4))  # one code per centre


def test_m_step_with_decay_zero_is_the_batch_mean_of_each_cluster():
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    q = EMCodebook(size=3, dim=3, decay=0.0, restart_after=1000).train()
    q.codebook.copy_(centres + 0.5)  # a deliberately wrong start
    q.initialised.fill_(True)
    pts, _ = blobs(centres, 40, 0.2)
    assign = nearest_code(pts, q.codebook)
    q(as_grid(pts))
    for k in range(3):
        assert torch.allclose(q.codebook[k], pts[assign == k].mean(0), atol=1e-4)


def test_kmeans_init_places_codes_on_the_data():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pts, _ = blobs(centres, 100, 0.1)
    out = kmeans(pts, 2, 10, torch.Generator().manual_seed(0))
    assert torch.cdist(out, centres).min(1).values.max() < 0.1


def test_dead_codes_restart_from_current_latents():
    q = EMCodebook(size=8, dim=2, decay=0.5, restart_after=2).train()
    q.codebook.copy_(torch.cat([torch.zeros(1, 2), torch.full((7, 2), 100.0)]))  # 7 codes far away
    q.ema_count.fill_(1.0)
    q.ema_sum.copy_(q.codebook)
    q.initialised.fill_(True)
    g = torch.Generator().manual_seed(0)
    pts, _ = blobs(torch.zeros(1, 2), 64, 1.0)
    for _ in range(2):  # the far codes are unused at steps 1 and 2, and restarted after step 2
        q(as_grid(pts), g)
    assert (q.codebook.abs() < 10).all()  # every far code was restarted onto the data
    assert q.usage(window=2) == 1 / 8  # a restart alone does not count as use
    for _ in range(20):
        q(as_grid(pts), g)
    assert q.usage(window=2) > 0.5  # once restarted onto the data, latents choose them


def test_straight_through_gradients_reach_the_encoder():
    q = EMCodebook(size=4, dim=2).train()
    z = torch.randn(3, 2, 2, 2, requires_grad=True)
    out = q(z, torch.Generator().manual_seed(0))
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_nearest_code_stays_exact_under_mixed_precision():
    # latents far from the origin with codes close together: bf16 matmuls would confuse them
    g = torch.Generator().manual_seed(0)
    codes = 10 + 0.1 * torch.randn(64, 8, generator=g)
    z = codes + 1e-3 * torch.randn(64, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(nearest_code(z, codes), torch.arange(64))


def test_product_codebook_recovers_each_groups_centres_and_codes_are_mixed_radix():
    # 4-D points = a 2-D blob centre from `left` beside one from `right`: 3 x 3 = 9 clusters,
    # which two codebooks of 3 codes each represent exactly
    left = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    right = torch.tensor([[-6.0, -6.0], [6.0, 6.0], [6.0, -6.0]])
    q = ProductCodebook(groups=2, size=3, dim=4, decay=0.9, restart_after=1000).train()
    g = torch.Generator().manual_seed(0)
    for step in range(30):
        gen = torch.Generator().manual_seed(step)
        a, b = torch.randint(3, (256,), generator=gen), torch.randint(3, (256,), generator=gen)
        pts = torch.cat([left[a], right[b]], 1) + 0.2 * torch.randn(256, 4, generator=gen)
        out = q(as_grid(pts), g)
    for book, centres in zip(q.books, (left, right)):
        assert torch.cdist(book.codebook, centres).min(0).values.max() < 0.1
    # a point's code is (its code in group 0) + 3 * (its code in group 1)
    i0, i1 = (torch.cdist(book.codebook, c).argmin(0) for book, c in zip(q.books, (left, right)))
    pts = torch.cat([left[[0, 1, 2, 1]], right[[2, 0, 1, 1]]], 1)
    codes = q.nearest(pts)
    assert torch.equal(codes, i0[[0, 1, 2, 1]] + 3 * i1[[2, 0, 1, 1]])
    assert torch.equal(q.split_codes(codes), torch.stack([i0[[0, 1, 2, 1]], i1[[2, 0, 1, 1]]], 1))
    assert torch.allclose(q.lookup(codes), pts, atol=0.1)
    assert out.codes.shape == (256, 1, 1) and int(out.codes.max()) < 9
    assert q.usage(5) == 1.0


def test_product_codebook_of_one_group_quantizes_like_a_single_codebook():
    torch.manual_seed(0)
    one, prod = EMCodebook(8, 4, restart_after=1000), ProductCodebook(1, 8, 4, restart_after=1000)
    z = torch.randn(16, 4, 3, 3)
    a, b = one(z, torch.Generator().manual_seed(0)), prod(z, torch.Generator().manual_seed(0))
    assert torch.equal(one.codebook, prod.books[0].codebook)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
    assert torch.equal(a.commitment, b.commitment)
