"""Architectures as plain specs: Arch1 (Small CNN Zoo), Arch2 (CNN-s) and user-defined ones.

An architecture is a list of layer dicts, e.g.
    {"type": "conv", "out": 16, "kernel": 3, "stride": 2, "padding": 0}
    {"type": "act"}                    # relu or tanh, chosen per network by its hyperparameters
    {"type": "dropout"}                # rate chosen per network
    {"type": "maxpool", "kernel": 2}   # also "avgpool"; "stride" defaults to "kernel"
    {"type": "gap"}                    # global average pool -> [B, C]
    {"type": "flatten"}
    {"type": "linear", "out": 10}
Input sizes are inferred by propagating the input shape, so every later component (store, SNE,
baselines) reads any such architecture from its `ParamInfo` layout without code changes.

Every dataset is served as 1 x 28 x 28 (see `sne_core.data`), so one spec has one parameter
count across datasets, which cross-dataset transfer needs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch import nn

LAYER_TYPES = {"conv", "linear", "act", "dropout", "maxpool", "avgpool", "gap", "flatten"}
PARAM_TYPES = {"conv", "linear"}
MAX_KERNEL = 7  # SNE reads kernels of size 1..MAX_KERNEL (an element is at most 7*7 values)


class ArchSpecError(ValueError):
    """A malformed architecture spec or an unknown architecture name."""


@dataclass(frozen=True)
class ArchSpec:
    name: str
    layers: tuple[dict, ...]
    in_channels: int = 1
    input_size: int = 28
    bias_init: float = 0.0  # Arch2 / CNN-s initialises biases to 0.01

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "layers": list(self.layers), "in_channels": self.in_channels,
                           "input_size": self.input_size, "bias_init": self.bias_init}, sort_keys=True)

    @staticmethod
    def from_json(text: str, source: str = "<json>") -> "ArchSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchSpecError(f"{source}: architecture spec is not valid JSON: {e}") from e
        return parse_spec(d, source)


@dataclass(frozen=True)
class ParamInfo:
    """One parameter tensor of an architecture, in state-dict order."""
    name: str          # state-dict key, e.g. "0.weight"
    depth: int         # index among the parameterised layers (0 = first conv)
    kind: str          # "conv" or "linear"
    role: str          # "weight" or "bias"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class Arch:
    """A validated spec with its inferred shapes."""
    spec: ArchSpec
    layout: tuple[ParamInfo, ...]
    # per spec layer: the activation shape after it, (C, H, W) or (F,)
    shapes: tuple[tuple[int, ...], ...] = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_params(self) -> int:
        return sum(p.numel for p in self.layout)

    @property
    def n_layers(self) -> int:
        return 1 + max(p.depth for p in self.layout)


ARCH1 = ArchSpec("arch1", (
    {"type": "conv", "out": 16, "kernel": 3, "stride": 2, "padding": 0}, {"type": "act"}, {"type": "dropout"},
    {"type": "conv", "out": 16, "kernel": 3, "stride": 2, "padding": 0}, {"type": "act"}, {"type": "dropout"},
    {"type": "conv", "out": 16, "kernel": 3, "stride": 2, "padding": 0}, {"type": "act"}, {"type": "dropout"},
    {"type": "gap"},
    {"type": "linear", "out": 10},
))

ARCH2 = ArchSpec("arch2", (
    {"type": "conv", "out": 8, "kernel": 5}, {"type": "maxpool", "kernel": 2}, {"type": "act"}, {"type": "dropout"},
    {"type": "conv", "out": 6, "kernel": 5}, {"type": "maxpool", "kernel": 2}, {"type": "act"}, {"type": "dropout"},
    {"type": "conv", "out": 4, "kernel": 2}, {"type": "act"},
    {"type": "flatten"},
    {"type": "linear", "out": 20}, {"type": "act"}, {"type": "dropout"},
    {"type": "linear", "out": 10},
), bias_init=0.01)

BUILTIN = {"arch1": ARCH1, "arch2": ARCH2}
_user_archs: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> Arch:
    """Register a user-defined architecture by name (validated now, not at first use)."""
    arch = resolve(spec)
    _user_archs[spec.name] = spec
    return arch


def get_arch(name: str) -> Arch:
    spec = BUILTIN.get(name) or _user_archs.get(name)
    if spec is None:
        known = sorted(BUILTIN) + sorted(_user_archs)
        raise ArchSpecError(f"unknown architecture {name!r}; known: {', '.join(known)} "
                            "(register your own with sne_core.archs.register_arch or an arch spec JSON file)")
    return resolve(spec)


def parse_spec(d: dict, source: str = "<spec>") -> ArchSpec:
    """Build an ArchSpec from a plain dict (e.g. loaded from JSON/YAML config)."""
    if not isinstance(d, dict):
        raise ArchSpecError(f"{source}: expected a mapping with 'name' and 'layers', got {type(d).__name__}")
    for key in ("name", "layers"):
        if key not in d:
            raise ArchSpecError(f"{source}: missing field {key!r} (expected 'name': str, 'layers': list)")
    if not isinstance(d["layers"], list) or not d["layers"]:
        raise ArchSpecError(f"{source}: field 'layers' must be a non-empty list of layer dicts")
    spec = ArchSpec(str(d["name"]), tuple(dict(l) if isinstance(l, dict) else l for l in d["layers"]),
                    int(d.get("in_channels", 1)), int(d.get("input_size", 28)), float(d.get("bias_init", 0.0)))
    resolve(spec, source)
    return spec


def _int_field(layer: dict, key: str, where: str, default=None, lo: int = 1) -> int:
    v = layer.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ArchSpecError(f"{where}: field {key!r} must be an integer >= {lo}, got {v!r}")
    return v


def resolve(spec: ArchSpec, source: str | None = None) -> Arch:
    """Validate a spec and infer every parameter's shape by propagating the input shape."""
    src = source or f"architecture {spec.name!r}"
    shape: tuple[int, ...] = (spec.in_channels, spec.input_size, spec.input_size)
    layout: list[ParamInfo] = []
    shapes = []
    depth = 0
    for i, layer in enumerate(spec.layers):
        where = f"{src}, layer {i}"
        if not isinstance(layer, dict) or layer.get("type") not in LAYER_TYPES:
            got = layer.get("type") if isinstance(layer, dict) else layer
            raise ArchSpecError(f"{where}: field 'type' must be one of {sorted(LAYER_TYPES)}, got {got!r}")
        t = layer["type"]
        if t == "conv":
            if len(shape) != 3:
                raise ArchSpecError(f"{where}: conv needs a (C, H, W) input, got shape {shape}; remove the flatten/gap before it")
            k = _int_field(layer, "kernel", where)
            if k > MAX_KERNEL:
                raise ArchSpecError(f"{where}: field 'kernel' must be <= {MAX_KERNEL}, got {k}")
            out = _int_field(layer, "out", where)
            s, p = _int_field(layer, "stride", where, 1), _int_field(layer, "padding", where, 0, lo=0)
            h = (shape[1] + 2 * p - k) // s + 1
            if h < 1:
                raise ArchSpecError(f"{where}: conv kernel {k} does not fit input {shape[1:]} ")
            layout += [ParamInfo(f"{i}.weight", depth, "conv", "weight", (out, shape[0], k, k)),
                       ParamInfo(f"{i}.bias", depth, "conv", "bias", (out,))]
            depth += 1
            shape = (out, h, h)
        elif t == "linear":
            if len(shape) != 1:
                raise ArchSpecError(f"{where}: linear needs a flat input, got shape {shape}; add a 'flatten' or 'gap' before it")
            out = _int_field(layer, "out", where)
            layout += [ParamInfo(f"{i}.weight", depth, "linear", "weight", (out, shape[0])),
                       ParamInfo(f"{i}.bias", depth, "linear", "bias", (out,))]
            depth += 1
            shape = (out,)
        elif t in ("maxpool", "avgpool"):
            if len(shape) != 3:
                raise ArchSpecError(f"{where}: {t} needs a (C, H, W) input, got shape {shape}")
            k = _int_field(layer, "kernel", where)
            s = _int_field(layer, "stride", where, k)
            h = (shape[1] - k) // s + 1
            if h < 1:
                raise ArchSpecError(f"{where}: {t} kernel {k} does not fit input {shape[1:]}")
            shape = (shape[0], h, h)
        elif t in ("gap", "flatten"):
            if len(shape) != 3:
                raise ArchSpecError(f"{where}: {t} needs a (C, H, W) input, got shape {shape}")
            shape = (shape[0],) if t == "gap" else (shape[0] * shape[1] * shape[2],)
        shapes.append(shape)
    if not layout:
        raise ArchSpecError(f"{src}: has no conv or linear layer")
    if len(shape) != 1:
        raise ArchSpecError(f"{src}: must end in a flat output (logits), got shape {shape}")
    return Arch(spec, tuple(layout), tuple(shapes))


def build_model(arch: Arch, activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """A torch module whose state-dict keys are the layout's names ("<spec index>.weight")."""
    if activation not in ("relu", "tanh"):
        raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
    mods: list[nn.Module] = []
    in_shape = (arch.spec.in_channels, arch.spec.input_size, arch.spec.input_size)
    for i, layer in enumerate(arch.spec.layers):
        t = layer["type"]
        if t == "conv":
            mods.append(nn.Conv2d(in_shape[0], layer["out"], layer["kernel"], layer.get("stride", 1), layer.get("padding", 0)))
        elif t == "linear":
            mods.append(nn.Linear(in_shape[0], layer["out"]))
        elif t == "act":
            mods.append(nn.ReLU() if activation == "relu" else nn.Tanh())
        elif t == "dropout":
            mods.append(nn.Dropout(dropout))
        elif t == "maxpool":
            mods.append(nn.MaxPool2d(layer["kernel"], layer.get("stride", layer["kernel"])))
        elif t == "avgpool":
            mods.append(nn.AvgPool2d(layer["kernel"], layer.get("stride", layer["kernel"])))
        elif t == "gap":
            mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif t == "flatten":
            mods.append(nn.Flatten())
        in_shape = arch.shapes[i]
    return nn.Sequential(*mods)


def state_dict_to_params(arch: Arch, state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """State dict -> parameter tensors in layout order, checking names and shapes."""
    out = []
    for p in arch.layout:
        if p.name not in state:
            raise KeyError(f"state dict for {arch.name!r} lacks {p.name!r}")
        t = state[p.name]
        if tuple(t.shape) != p.shape:
            raise ValueError(f"{arch.name!r} {p.name}: expected shape {p.shape}, got {tuple(t.shape)}")
        out.append(t)
    return out
