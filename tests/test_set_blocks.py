"""MAB / SAB / PMA honour key-padding masks: padded members never change a valid output."""
import torch

from sne_core.encoders.set_blocks import MAB, PMA, SAB, SetEncoder

TOL = dict(atol=1e-5, rtol=1e-5)


def _blocks(dim=16, heads=4):
    torch.manual_seed(0)
    return SAB(dim, heads).eval(), PMA(dim, heads).eval(), SetEncoder(dim, heads).eval()


def test_padding_elements_change_nothing():
    sab, pma, phi = _blocks()
    X = torch.randn(3, 5, 16)
    lens = torch.tensor([5, 3, 1])
    mask = torch.arange(5)[None] < lens[:, None]
    # the same sets with 4 extra padded members holding large garbage, and the garbage in the
    # padded slots of the original too
    Xg = torch.where(mask[..., None], X, torch.full_like(X, 1e3))
    Xp = torch.cat([Xg, 1e3 * torch.randn(3, 4, 16)], dim=1)
    maskp = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    for f in (sab, phi):
        a, b = f(X, mask), f(Xp, maskp)
        assert torch.allclose(a[mask], b[:, :5][mask], **TOL)
        assert torch.isfinite(b).all()  # padded query rows stay finite
    assert torch.allclose(pma(X, mask), pma(Xp, maskp), **TOL)


def test_masked_set_equals_the_unpadded_set():
    sab, pma, _ = _blocks()
    X = torch.randn(1, 6, 16)
    mask = torch.tensor([[True, True, True, False, False, False]])
    assert torch.allclose(sab(X, mask)[:, :3], sab(X[:, :3]), **TOL)
    assert torch.allclose(pma(X, mask), pma(X[:, :3]), **TOL)


def test_sets_in_a_batch_are_independent_and_permutation_behaves():
    sab, pma, _ = _blocks()
    X = torch.randn(4, 7, 16)
    alone = pma(X[2:3])
    assert torch.allclose(pma(X)[2:3], alone, **TOL)
    perm = torch.randperm(7)
    assert torch.allclose(pma(X[:, perm]), pma(X), **TOL)              # PMA invariant
    assert torch.allclose(sab(X[:, perm]), sab(X)[:, perm], **TOL)     # SAB equivariant


def test_all_padded_set_is_finite_and_leaves_others_alone():
    sab, pma, _ = _blocks()
    X = torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    assert torch.isfinite(sab(X, mask)).all() and torch.isfinite(pma(X, mask)).all()
    assert torch.allclose(pma(X, mask)[0], pma(X[:1, :2])[0], **TOL)


def test_mab_cross_attention_mask_and_gradients():
    torch.manual_seed(0)
    mab = MAB(8, 2)
    X, Y = torch.randn(2, 3, 8), torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    # (a plain .sum() of a LayerNorm output has zero gradient; weight the outputs instead)
    (mab(X, Y, mask) * torch.randn(2, 3, 8)).sum().backward()
    assert (Y.grad[1, 2:] == 0).all()        # padded keys get no gradient: they took no part
    assert Y.grad[1, :2].abs().sum() > 0
    assert all(p.grad is not None for p in mab.parameters())
