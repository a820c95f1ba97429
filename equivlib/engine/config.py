"""The typed config of one training run: sections data, model, optim, schedule, train, test.

A config says *what* is computed; it is hashed (:meth:`RunConfig.key`) to name the run's
result file and checkpoint. *How* it runs (device, DataLoader workers, AMP, channels_last,
number of DDP processes) is not part of it. Unknown keys and bad values raise ``ValueError``
when the config is built, before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from equivlib.store.results import config_hash

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = {  # name -> (step unit, accepted kwargs)
    "none": ("epoch", ()),
    "step": ("epoch", ("step_size", "gamma")),
    "multistep": ("epoch", ("milestones", "gamma")),
    "onecycle": ("batch", ("pct_start", "div_factor", "final_div_factor")),
    "warmup_multistep": ("batch", ("warmup_epochs", "milestones", "gamma")),
}
REGIMES = ("none", "biased", "uniform")
SELECTIONS = ("best_valid", "last")


@dataclass
class DataConfig:
    """Which data, at which input size, with which augmentation.

    ``options`` go to :func:`equivlib.data.get_dataset` (e.g. MNIST ``source``/``sizes``,
    CIFAR ``fraction``); ``protocol`` picks the transforms (empty: the dataset's own).
    ``regime`` / ``mu`` / ``sigma``: RotMNIST training rotations; ``quarter_turns``: a
    random quarter turn per training image; ``flips``: the protocol's horizontal flip."""

    dataset: str = "mnist"
    input_size: int = 28
    options: dict[str, Any] = field(default_factory=dict)
    protocol: str = ""
    regime: str = "none"
    mu: float = 45.0
    sigma: float = 0.0
    quarter_turns: bool = False
    flips: bool = True


@dataclass
class ModelConfig:
    """A registered model (:func:`equivlib.models.get_model`) and its builder's kwargs;
    ``num_classes`` comes from the dataset. ``revision`` is set from the registry (the
    architecture's revision, so a changed architecture gets new results-store keys)."""

    name: str = "p4_mnist_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    revision: int = 0


@dataclass
class OptimConfig:
    """Optimiser: ``adam`` / ``adamw`` (``momentum`` unused) or ``sgd`` (with momentum)."""

    name: str = "adam"
    lr: float = 0.01
    weight_decay: float = 1e-5
    momentum: float = 0.9


@dataclass
class ScheduleConfig:
    """Learning-rate schedule and its kwargs; its step unit (batch or epoch) is fixed by
    the name (see ``SCHEDULES``)."""

    name: str = "step"
    kwargs: dict[str, Any] = field(default_factory=lambda: {"step_size": 10, "gamma": 0.5})

    @property
    def unit(self) -> str:
        return SCHEDULES[self.name][0]


@dataclass
class TrainConfig:
    """Seed, epochs, global batch size (split over DDP processes) and model selection."""

    seed: int = 0
    epochs: int = 50
    batch_size: int = 256
    select: str = "best_valid"
    label_smoothing: float = 0.0


@dataclass
class TestConfig:
    """What the test reports: accuracy at each rotation ``angles`` (multiples of 90°
    exact), also on the mirrored test set (``flips``), top-k for each ``topk`` (a k at least
    the number of classes is 100 % by definition: the run warns), and the equivariance error
    of the trained model at the modules ``error_layers`` (on ``error_images`` test images)."""

    angles: list[float] = field(default_factory=lambda: [float(a) for a in range(0, 360, 10)])
    flips: bool = False
    topk: list[int] = field(default_factory=lambda: [1])
    error_layers: list[str] = field(default_factory=list)
    error_images: int = 64
    batch_size: int = 500


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
            "schedule": ScheduleConfig, "train": TrainConfig, "test": TestConfig}


@dataclass
class RunConfig:
    """The whole config of one run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able), the form stored with results. A model revision of
        0 is left out, so the keys of models never revised stay as they were."""
        d = dataclasses.asdict(self)
        if d["model"]["revision"] == 0:
            del d["model"]["revision"]
        return d

    def key(self) -> str:
        """The results-store key: a hash of :meth:`to_dict`."""
        return config_hash(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any] | RunConfig) -> RunConfig:
        """Build and validate from a (possibly partial) nested dict; missing keys take the
        defaults above. Raises ValueError for unknown sections/keys or bad values."""
        if isinstance(d, RunConfig):
            d = d.to_dict()
        if not isinstance(d, dict):
            raise ValueError(f"a run config is a dict of sections, got {type(d).__name__}")
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; sections: {list(SECTIONS)}")
        sections = {}
        for name, section_cls in SECTIONS.items():
            given = copy.deepcopy(d.get(name, {}))
            if not isinstance(given, dict):
                raise ValueError(f"config section {name!r} must be a dict, got {given!r}")
            known = {f.name for f in dataclasses.fields(section_cls)}
            bad = sorted(set(given) - known)
            if bad:
                raise ValueError(f"unknown key(s) {bad} in config section {name!r}; "
                                 f"known: {sorted(known)}")
            sections[name] = section_cls(**given)
        config = cls(**sections)
        validate(config)
        return config

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with some keys of some sections replaced, validated:
        ``config.replace(train={"seed": 2})``."""
        d = self.to_dict()
        for name, values in sections.items():
            if name not in SECTIONS:
                raise ValueError(f"unknown config section {name!r}")
            d[name] = {**d[name], **values}
        return RunConfig.from_dict(d)


# ------------------------------------------------------------------ validation
def _fail(where: str, value: Any, want: str) -> None:
    raise ValueError(f"config {where} = {value!r}: {want}")


def _int(where: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(where, value, f"expected an int >= {low}")
    return value


def _float(where: str, value: Any, low: float = 0.0, *, strict: bool = False,
           high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < low or (strict and value == low) or value > high:
        bounds = [f"{'>' if strict else '>='} {low:g}"] if low != -math.inf else []
        bounds += [f"<= {high:g}"] if high != math.inf else []
        _fail(where, value, " ".join(["expected a finite number", " and ".join(bounds)]).strip())
    return float(value)


def _choice(where: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        _fail(where, value, f"expected one of {', '.join(choices)}")


def validate(c: RunConfig) -> None:
    """Check every value of ``c`` (types, ranges, names of registered things) and normalise
    numbers (ints to floats where floats are meant), raising ValueError before any work."""
    from equivlib.data.registry import dataset_options, dataset_source
    from equivlib.data.transforms import PROTOCOLS
    from equivlib.models import list_models, model_revision

    d = c.data
    source = dataset_source(d.dataset)  # unknown dataset: ValueError listing the known ones
    d.input_size = _int("data.input_size", d.input_size)
    if d.protocol == "":
        d.protocol = source.protocol
    _choice("data.protocol", d.protocol, PROTOCOLS)
    bad = sorted(set(d.options) - set(dataset_options(d.dataset)))
    if bad:
        _fail("data.options", d.options,
              f"unknown option(s) {bad} of dataset {d.dataset!r}; accepted: "
              f"{dataset_options(d.dataset)}")
    _choice("data.regime", d.regime, REGIMES)
    d.mu = _float("data.mu", d.mu, -math.inf)
    d.sigma = _float("data.sigma", d.sigma, 0.0, strict=d.regime == "biased")
    if d.regime != "biased":  # sigma means nothing there: one run, one key
        d.sigma = 0.0
        d.mu = 45.0
    for flag in ("quarter_turns", "flips"):
        if not isinstance(getattr(d, flag), bool):
            _fail(f"data.{flag}", getattr(d, flag), "expected true or false")

    _choice("model.name", c.model.name, list_models())
    c.model.revision = model_revision(c.model.name)
    if "num_classes" in c.model.kwargs:
        _fail("model.kwargs", c.model.kwargs, "num_classes comes from the dataset")

    o = c.optim
    _choice("optim.name", o.name, OPTIMIZERS)
    o.lr = _float("optim.lr", o.lr, 0.0, strict=True)
    o.weight_decay = _float("optim.weight_decay", o.weight_decay)
    o.momentum = _float("optim.momentum", o.momentum, high=1.0)
    if o.name != "sgd":
        o.momentum = 0.9  # unused: one run, one key

    s = c.schedule
    _choice("schedule.name", s.name, list(SCHEDULES))
    bad = sorted(set(s.kwargs) - set(SCHEDULES[s.name][1]))
    if bad:
        _fail("schedule.kwargs", s.kwargs, f"unknown key(s) {bad} for schedule {s.name!r}; "
              f"accepted: {list(SCHEDULES[s.name][1])}")
    if "milestones" in s.kwargs:
        m = s.kwargs["milestones"]
        if not isinstance(m, list | tuple) or not all(isinstance(e, int) and e >= 1 for e in m) \
                or list(m) != sorted(set(m)):
            _fail("schedule.kwargs.milestones", m, "expected increasing epoch numbers >= 1")
        s.kwargs["milestones"] = list(m)
    if "gamma" in s.kwargs:
        s.kwargs["gamma"] = _float("schedule.kwargs.gamma", s.kwargs["gamma"], 0.0, strict=True)
    if "step_size" in s.kwargs:
        _int("schedule.kwargs.step_size", s.kwargs["step_size"])
    if "warmup_epochs" in s.kwargs:
        _float("schedule.kwargs.warmup_epochs", s.kwargs["warmup_epochs"])

    t = c.train
    _int("train.seed", t.seed, 0)
    _int("train.epochs", t.epochs)
    _int("train.batch_size", t.batch_size)
    _choice("train.select", t.select, SELECTIONS)
    t.label_smoothing = _float("train.label_smoothing", t.label_smoothing, high=1.0)

    e = c.test
    if not isinstance(e.angles, list | tuple) or not e.angles:
        _fail("test.angles", e.angles, "expected a non-empty list of degrees")
    e.angles = [_float("test.angles", a, -math.inf) for a in e.angles]
    if len(set(e.angles)) != len(e.angles):
        _fail("test.angles", e.angles, "lists an angle twice")
    if not isinstance(e.topk, list | tuple) or not e.topk:
        _fail("test.topk", e.topk, "expected a non-empty list such as [1, 5]")
    e.topk = [_int("test.topk", k) for k in e.topk]
    if not isinstance(e.flips, bool):
        _fail("test.flips", e.flips, "expected true or false")
    if not isinstance(e.error_layers, list | tuple) or not all(
            isinstance(n, str) for n in e.error_layers):
        _fail("test.error_layers", e.error_layers, "expected a list of module names")
    e.error_layers = list(e.error_layers)
    _int("test.error_images", e.error_images)
    _int("test.batch_size", e.batch_size)
