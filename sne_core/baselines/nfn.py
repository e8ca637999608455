"""NFN-NP and NFN-HNP (Zhou et al. 2023, "Permutation Equivariant Neural Functionals"), SPEC §5.

The equivariant layers, pools and weight-space containers are the authors' own, from the `nfn`
package on PyPI; this module only converts a WeightSet into their layout and stacks the layers the
way their generalisation predictor does (`InvariantNFN` in their experiments): a few NF-layers with
ReLU, an invariant pool, a 3-layer MLP head. Defaults follow their CNN-zoo configs:
hidden channels (16, 16, 5), head width 1000, HNP pool in the head for both modes; NFN-NP uses
NP layers with the learned input/output position embedding (their "NP-PosEmb") and per-position
weight standardisation fitted on the training zoo, NFN-HNP neither.

The NFN weight space assumes layer l's output neurons are layer l+1's input neurons. That holds for
conv -> conv (pooling between convs acts per channel) and conv -> global average pool -> linear
(Arch1), but not for Flatten -> Linear (Arch2), where each channel feeds H*W linear inputs: those
archs are refused with the reason, and the tables report n/a.
"""
from __future__ import annotations

import torch
from torch import nn

from sne_core.archs import Arch
from sne_core.baselines.common import (FeatureNorm, UnsupportedArchitecture, arch_check, check_groups, layout_key,
                                       module_device)
from sne_core.layers import mlp
from sne_core.weights import WeightSet

MODES = ("NP", "HNP")


def _import_nfn():
    # imported here so `sne_core` (and the other baselines) import without the nfn package
    try:
        import nfn.common
        import nfn.layers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("NFN baselines need the `nfn` package from PyPI (pip install nfn==0.1.2)") from e
    return nfn


def to_wsfeat(params: list[torch.Tensor]):
    """Layout-ordered [w0, b0, w1, b1, ...] with a leading batch dim -> nfn WeightSpaceFeatures.

    nfn wants one channel dim after the batch: conv weight [B, 1, out, in, k, k], linear weight
    [B, 1, out, in], bias [B, 1, out] (its NF-layers fold the k*k kernel into channels themselves).
    """
    nfn = _import_nfn()
    return nfn.common.WeightSpaceFeatures([w.unsqueeze(1) for w in params[0::2]],
                                          [b.unsqueeze(1) for b in params[1::2]])


class NFNPredictor(nn.Module):
    """WeightSet -> nfn features -> [NF-layer -> ReLU] x len(hchannels) -> invariant pool -> MLP -> logit [B]."""

    mode = "HNP"

    def __init__(self, train_archs: list[Arch], hchannels: tuple[int, ...] = (16, 16, 5), head_hidden: int = 1000,
                 pool: str = "HNP", normalize: bool | None = None, io_embed: bool | None = None,
                 dropout: float = 0.0):
        super().__init__()
        nfn = _import_nfn()
        if not train_archs:
            raise ValueError(f"NFN-{self.mode} needs a training architecture")
        self.arch = train_archs[0]
        for a in train_archs:
            self.check_arch(a)  # also checks every train arch shares arch[0]'s layout
        if pool not in MODES:
            raise ValueError(f"NFN pool must be one of {MODES}, got {pool!r}")
        # authors' CNN-zoo defaults: NP with normalisation and IO embedding, HNP with neither
        self.normalize = (self.mode == "NP") if normalize is None else normalize
        io_embed = (self.mode == "NP") if io_embed is None else io_embed

        dummy = [torch.zeros(1, *p.shape) for p in self.arch.layout]
        spec = nfn.common.network_spec_from_wsfeat(to_wsfeat(dummy))
        layers: list[nn.Module] = []
        c_prev = 1
        for c in hchannels:
            if self.mode == "NP":
                layers.append(nfn.layers.NPLinear(spec, c_prev, c, io_embed=io_embed))
            else:
                layers.append(nfn.layers.HNPLinear(spec, c_prev, c))
            layers.append(nfn.layers.TupleOp(nn.ReLU()))
            c_prev = c
        self.equivariant = nn.Sequential(*layers)
        pool_cls = nfn.layers.HNPPool if pool == "HNP" else nfn.layers.NPPool
        self.pool = nn.Sequential(pool_cls(spec), nn.Flatten(start_dim=-2))  # [B, c_prev * pool_outs]
        self.head = mlp([c_prev * pool_cls.get_num_outs(spec), head_hidden, head_hidden, 1], dropout)
        self.norm = FeatureNorm(self.arch.n_params) if self.normalize else None

    @arch_check
    def check_arch(cls, self, arch: Arch) -> None:
        who = f"NFN-{cls.mode}"
        kinds = {p.kind for p in arch.layout}
        if not kinds <= {"conv", "linear"}:
            raise UnsupportedArchitecture(f"{who} reads conv and linear layers only; {arch.name!r} has {sorted(kinds)}")
        if arch.n_layers < 2:
            raise UnsupportedArchitecture(f"{who} needs at least 2 parameterised layers; {arch.name!r} has {arch.n_layers}")
        shape = (arch.spec.in_channels, arch.spec.input_size, arch.spec.input_size)
        for i, layer in enumerate(arch.spec.layers):
            if layer["type"] == "flatten" and len(shape) == 3 and shape[1] * shape[2] > 1:
                raise UnsupportedArchitecture(
                    f"NFN needs a global average pool before the first linear layer; {arch.name} uses flatten -> linear "
                    f"(each of its {shape[0]} channels feeds {shape[1] * shape[2]} linear inputs, which breaks the "
                    "neuron-permutation symmetry NFN layers assume)")
            shape = arch.shapes[i]
        weights = [p for p in arch.layout if p.role == "weight"]
        for prev, cur in zip(weights[:-1], weights[1:]):
            if cur.shape[1] != prev.shape[0]:
                raise UnsupportedArchitecture(f"{who}: {arch.name!r} {cur.name} has {cur.shape[1]} inputs but "
                                              f"{prev.name} has {prev.shape[0]} outputs; NFN needs them equal")
        if self is not None and layout_key(arch) != layout_key(self.arch):
            raise UnsupportedArchitecture(f"{who} was built for the layout of {self.arch.name!r}; {arch.name!r} has a "
                                          "different parameter layout (its NF-layers are sized per layer)")

    def _params(self, groups: list[WeightSet]) -> list[torch.Tensor]:
        check_groups(groups, self.check_arch)
        dev = module_device(self)
        return [torch.cat([ws.params[j] for ws in groups]).to(dev, torch.float32)
                for j in range(len(self.arch.layout))]

    @torch.no_grad()
    def prepare(self, train_groups: list[WeightSet]) -> None:
        """Fit the per-position weight standardisation (NP default) on the training networks."""
        if self.norm is not None:
            params = self._params(train_groups)
            self.norm.fit(torch.cat([p.reshape(p.shape[0], -1) for p in params], 1))

    def forward(self, groups: list[WeightSet]) -> torch.Tensor:
        params = self._params(groups)                                      # layout order, [B, *shape] each
        if self.norm is not None:
            b = params[0].shape[0]
            flat = self.norm(torch.cat([p.reshape(b, -1) for p in params], 1))   # [B, P]
            params = [x.reshape(p.shape) for x, p in zip(flat.split([p[0].numel() for p in params], 1), params)]
        feats = self.equivariant(to_wsfeat(params))                        # weights [B, C, out, in(, k, k)]
        return self.head(self.pool(feats)).squeeze(-1)                     # [B]


class NFNNPPredictor(NFNPredictor):
    """NFN with NP layers (permutation symmetry of hidden *and* input/output neurons, IO embedding on)."""
    mode = "NP"


class NFNHNPPredictor(NFNPredictor):
    """NFN with HNP layers (permutation symmetry of hidden neurons only)."""
    mode = "HNP"
