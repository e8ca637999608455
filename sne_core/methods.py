"""Registry of predictors: method name -> how to build it, its default hyperparameters and
training settings. Modules are imported on first use, so a baseline whose module (or optional
package, e.g. `nfn`) is missing breaks only its own method.

Torch methods follow the predictor contract in docs/DESIGN.md (`forward(list[WeightSet]) ->
logits[B]`, classmethod `check_arch`) and are trained by `sne_core.train.fit`; GBM is not
torch and brings its own `fit`/`predict` (see `sne_core.train._fit_gbm`).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


class MethodError(ValueError):
    """Unknown method name, or its module cannot be imported."""


@dataclass(frozen=True)
class Method:
    name: str
    target: str                      # "module:Class" of the predictor, imported lazily
    hyper: dict[str, Any] = field(default_factory=dict)   # default constructor hyperparameters
    is_torch: bool = True            # False: the class has its own fit(...)/predict(groups)
    # Logit-invariance weight v (SPEC §4.6). Only SNE uses it by default: it is how SNE learns the
    # hidden-unit permutation symmetry without weight tying. DeepSets/StatNN/NFN are invariant by
    # construction (the penalty is identically 0, pure cost), and the published MLP baseline is
    # trained without it, so adding it there would no longer be that baseline.
    invariance_weight: float = 0.0
    # TrainConfig.ema_epochs when the config leaves it None: validate, select and return an average
    # of the weights over ~N epochs (0 = the raw weights). Measured on the six 200-network CPU zoos
    # (docs/RESULTS.md, session 6), in-distribution tau with N = 4 against 0: SNE +0.013, StatNN
    # +0.004, GBM unaffected, DeepSets -0.020, MLP -0.013, NFN-HNP -0.012, NFN-NP -0.007. So only
    # SNE averages by default; the baselines keep the recipe they were published and measured with.
    ema_epochs: float = 0.0
    # TrainConfig.aux_weight and stats_weight when the config leaves them None: the weights of the
    # auxiliary targets' losses (sne_core.aux_targets). Only predictors with a learned code can take them.
    # SNE learns to predict its networks' own weight statistics (stats_weight 1): on MNIST/Arch2, 800
    # training and 1,000 test networks, test tau 0.730 against 0.695 (+0.035, higher on each of 3 seeds),
    # validation tau 0.720 against 0.725 (200 networks, within noise); on MNIST/Arch1 with 400, 0.769
    # against 0.755 (2 seeds, validation +0.037). The records (aux_weight) added
    # less (+0.011, one seed) and nothing on test on top of the statistics (docs/RESULTS.md, session 16).
    aux_weight: float = 0.0
    stats_weight: float = 0.0
    # TrainConfig.tensor_stats_weight's default: every tensor vector of SNE's layer encoder predicts its own
    # tensor's statistics (aux_targets.TensorStatsHead). Off for every method, SNE included: on MNIST/Arch1
    # with 400 training networks, on top of stats_weight 1, it moved test tau by +0.007, +0.017 and -0.003
    # (seeds 0-2; 0.776 ± 0.004 against 0.769 ± 0.014), all of it among the collapsed networks, and
    # validation tau by +0.006, -0.027 and -0.013, so selection on validation would not choose it
    # (docs/RESULTS.md, session 20).
    tensor_stats_weight: float = 0.0
    # TrainConfig.neuron_stats' default: with stats_weight > 0, the statistics targets also hold per-layer
    # statistics read neuron by neuron (aux_targets.neuron_statistic_targets). Off for every method, SNE
    # included (it was on for SNE in session 21): with 400 training networks it moved test tau by +0.010
    # on MNIST/Arch1 (seeds 0-4, standard error 0.006, validation +0.003) and by -0.011 on MNIST/Arch2
    # (seeds 0-2, lower on each; validation -0.023), so it does not carry across architectures
    # (docs/RESULTS.md, sessions 21-22).
    neuron_stats: bool = False
    # How the class is constructed: "archs" -> Cls(train_archs, **hyper); "sne" -> Cls(SNEConfig(**hyper)).
    build_style: str = "archs"
    # A composite method: these methods, each trained separately with its own defaults (`fit` passes
    # part p the hyperparameters hyper[p] and the training settings TrainConfig.part_train[p] over the
    # composite's), predict the mean of their logits (sne_core.ensemble).
    # `target` is then unused.
    parts: tuple[str, ...] = ()

    def cls(self):
        module, attr = self.target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise MethodError(f"method {self.name!r}: cannot load {self.target} ({e})") from e

    def config_class(self):
        """The config dataclass a "sne"-style class is built from: SNEConfig in the target's module."""
        return getattr(importlib.import_module(self.target.split(":")[0]), "SNEConfig")

    def build(self, train_archs: list, hyper: dict | None = None):
        """An untrained predictor (training: sne_core.train.fit)."""
        if self.parts:
            from sne_core.ensemble import Ensemble
            return Ensemble([get_method(p).build(train_archs, (hyper or {}).get(p)) for p in self.parts])
        h = {**self.hyper, **(hyper or {})}
        cls = self.cls()
        if self.build_style == "sne":
            config_cls = self.config_class()
            unknown = set(h) - set(getattr(config_cls, "__dataclass_fields__", h))
            if unknown:
                raise MethodError(f"method {self.name!r}: unknown SNEConfig field(s) {sorted(unknown)}")
            return cls(config_cls(**h))
        return cls(list(train_archs), **h)


# Hyperparameters the registry does not set are the predictor classes' own defaults; the ones set
# here are the project's choices (see each class for the reason).
METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method; how users plug in their own predictor."""
    METHODS[method.name] = method
    return method


for _m in (
    Method("sne", "sne_core.encoders.sne:SNE", invariance_weight=1.0, ema_epochs=4.0, stats_weight=1.0,
           build_style="sne"),
    Method("mlp", "sne_core.baselines.mlp:MLPPredictor"),
    Method("deepsets", "sne_core.baselines.deepsets:DeepSetsPredictor"),
    Method("statnn", "sne_core.baselines.statnn:StatNNPredictor"),
    Method("gbm", "sne_core.baselines.gbm:GBMPredictor", is_torch=False),
    Method("nfn_np", "sne_core.baselines.nfn:NFNNPPredictor"),
    Method("nfn_hnp", "sne_core.baselines.nfn:NFNHNPPredictor"),
    # SNE and StatNN, mean logit: the set encoder and the weight statistics make different mistakes
    # (docs/RESULTS.md, session 8). Not SNE: its own row stays the paper's encoder alone.
    Method("sne_statnn", "", parts=("sne", "statnn")),
):
    register_method(_m)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def hyper_for(method: str, by_method: dict) -> dict:
    """What `method` takes from a {method: hyperparameters} map (a run profile's, a size's): its own
    entry; a composite without one gets each part's entry, keyed by part, as `fit` expects."""
    parts = get_method(method).parts
    if parts and method not in by_method:
        return {p: dict(by_method.get(p, {})) for p in parts}
    return dict(by_method.get(method, {}))


def merge_hyper(method: str, base: dict, over: dict | None) -> dict:
    """`over` on top of `base`, both hyperparameters of `method`. A composite's are keyed by part,
    and merge part by part: {"sne": {"hidden": 64}} changes SNE's width and keeps its other settings."""
    over = over or {}
    if get_method(method).parts:
        return {p: {**base.get(p, {}), **over.get(p, {})} for p in dict.fromkeys([*base, *over])}
    return {**base, **over}


def check_method_arch(method: str, arch) -> None:
    """Raise the predictor's UnsupportedArchitecture (with its reason) if `method` cannot read `arch`."""
    spec = get_method(method)
    if spec.parts:                    # a composite reads what all its parts read
        for part in spec.parts:
            check_method_arch(part, arch)
        return
    check: Callable | None = getattr(spec.cls(), "check_arch", None)
    if check is not None:
        check(arch)


def _constructor_defaults(spec: Method) -> dict:
    """What `spec.build` leaves to the predictor class: SNEConfig's fields for SNE, the keyword defaults of
    the class's constructor otherwise (a composite has none of its own)."""
    if spec.parts:
        return {}
    if spec.build_style == "sne":
        return asdict(spec.config_class()())
    return {name: p.default for name, p in inspect.signature(spec.cls().__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def defaults_fingerprint(name: str) -> str:
    """Everything the library decides for method `name` when a caller sets nothing, hashed: its registry
    entry (hyperparameters, invariance, averaging and auxiliary weights), its predictor class's defaults
    (SNEConfig for SNE), TrainConfig's defaults, and the same for a composite's parts. Result keys (the
    Dagster predictor's MLflow key, paper_tables' job files) hold what the caller set plus this, so rows
    trained before a library default changed are not reused. The price: a new TrainConfig field changes
    every method's fingerprint and trains everything again (correct, if not always needed)."""
    from sne_core import train               # here: sne_core.train imports this module
    spec = get_method(name)
    specs = [spec] + [get_method(p) for p in spec.parts]
    key = json.dumps([[asdict(s), _constructor_defaults(s)] for s in specs] + [train.config_dict(train.TrainConfig())],
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:8]
