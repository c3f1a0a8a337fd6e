"""Experiment configs: YAML validated by pydantic, overridable from the command line.

A config names one model entrypoint and its keyword arguments, one data set, and a schedule; nothing
is inherited from other files. Every key is checked: an unknown key or a bad value is reported by its
dotted path (`train.lr: expected a number, got 'fast'`), as one line.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(_Strict):
    name: str
    num_classes: int | None = Field(None, gt=0, description="defaults to the data set's class count")
    kwargs: dict[str, Any] = {}
    weights: str | None = None
    backbone_weights: str | None = None


class DataConfig(_Strict):
    name: str = "synthetic"
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    kwargs: dict[str, Any] = {}
    crop_size: tuple[int, int] = (128, 128)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: float = Field(0.2, ge=0)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    batch_size: int = Field(8, gt=0, description="per process: the global batch is batch_size x processes "
                            "x train.accumulate_steps")
    # "auto": 0 on CPU machines with up to 4 cores (workers would take the cores the step needs), else 2;
    # on CUDA min(8, cores per process). Workers persist across epochs and prefetch 2 batches each.
    num_workers: int | Literal["auto"] = "auto"
    image_labels: str | None = Field(None, description="class-list file of the training images for "
                                     "train.supervision=image_labels (seglab.data.image_labels); relative "
                                     "to data.root unless it exists as given; unset: from the train masks")


class SlideConfig(_Strict):
    crop: tuple[int, int]
    stride: tuple[int, int]
    blend: Literal["uniform", "gaussian"] = "gaussian"


class OHEMConfig(_Strict):
    """Online hard example mining for the cross-entropy (`SegmentationLoss(ohem_thresh=...)`)."""
    thresh: float = Field(0.7, gt=0, le=1)
    min_kept: float = Field(1 / 16, gt=0, le=1)


class TrainConfig(_Strict):
    epochs: int = Field(20, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    warmup_iters: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.1, gt=0, le=1)
    # Where and how: auto (CUDA if available, else CPU), cpu, cuda, cuda:N, mps; autocast precision
    # (fp16 trains with a gradient scaler); `bf16: true` is a synonym for `precision: bf16`.
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    bf16: bool = False
    # Gradient accumulation: one optimizer step per this many batches (the schedule counts steps).
    accumulate_steps: int = Field(1, ge=1)
    # Distributed runs: BatchNorm statistics over the whole global batch (SyncBatchNorm).
    sync_bn: bool = False
    # Run the network through torch.compile (first step compiles; falls back to eager with a message).
    compile: bool = False
    channels_last: bool = False
    class_weights: Literal["none", "median_frequency", "sqrt_median_frequency"] = "none"
    ohem: OHEMConfig | None = None
    # Joint models (task "joint"): loss weight per label space, unlisted spaces 1.0 (seglab.engine.joint).
    label_space_weights: dict[str, float] | None = None
    aux_weight: float = Field(0.4, ge=0)
    se_weight: float = Field(0.2, ge=0)  # EncNet SE-loss weight, used when the model returns "se"
    val_interval: int = Field(1, gt=0)
    # Stop once this much TRAINING time (validation excluded) has accumulated; a final validation still
    # runs. Each metrics.jsonl entry records the running total as `train_minutes`.
    max_minutes: float | None = Field(None, gt=0)
    # Validate at the end of the first epoch after every this many training minutes (replaces
    # val_interval when set; time-to-accuracy curves, e.g. benchmarks/instance_synthetic.py).
    val_every_minutes: float | None = Field(None, gt=0)
    seed: int = 0
    out_dir: str = "runs/exp"
    grad_clip: float | None = Field(None, gt=0)
    # image_labels: MIL-FCN's multi-class MIL loss on image-level class lists (seglab.engine.weak)
    supervision: Literal["pixel", "image_labels"] = "pixel"

    @model_validator(mode="after")
    def _precision_synonym(self):
        if self.bf16 and "precision" in self.model_fields_set and self.precision != "bf16":
            raise ValueError(f"train.bf16 is true but train.precision is {self.precision}; set only "
                             f"train.precision (train.bf16: true is a synonym of precision: bf16)")
        if self.bf16:
            self.precision = "bf16"
        self.bf16 = self.precision == "bf16"
        return self


class TTAConfig(_Strict):
    flip: bool = True
    scales: tuple[float, ...] = (1.0,)


class CRFConfig(_Strict):
    """Dense CRF parameters (`seglab.inference.dense_crf`); defaults are DeepLab v2's."""
    iterations: int = Field(5, ge=0)
    pos_w: float = Field(3.0, ge=0)
    pos_xy_std: float = Field(1.0, gt=0)
    bi_w: float = Field(4.0, ge=0)
    bi_xy_std: float = Field(67.0, gt=0)
    bi_rgb_std: float = Field(3.0, gt=0)


class EvalConfig(_Strict):
    slide: SlideConfig | None = None
    tta: TTAConfig | None = None
    crf: CRFConfig | None = None


class Config(_Strict):
    model: ModelConfig
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check(self):
        if len(self.data.mean) != len(self.data.std):
            raise ValueError("data.mean and data.std must have the same length")
        return self


def _field_names(model_cls: type[BaseModel]) -> list[str]:
    return list(model_cls.model_fields)


def _unknown_key_hint(loc: tuple) -> str:
    """Close matches for an unknown key, found by walking the schema along its path."""
    cls: Any = Config
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cls is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), _field_names(cls), n=3)
    return f" (did you mean: {', '.join(close)}?)" if close else f" (valid keys: {', '.join(_field_names(cls))})"


def _format_error(err: ValidationError, source: str) -> str:
    # An unknown key explains the other errors (a misspelt section is also "missing"), so report it first.
    errors = sorted(err.errors(), key=lambda x: x["type"] != "extra_forbidden")
    e = errors[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = ".".join(str(p) for p in loc) or "<root>"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown config key {path}{_unknown_key_hint(loc)}"
    value = e.get("input")
    shown = f", got {value!r}" if not isinstance(value, dict) and value is not None else ""
    return f"{source}: config key {path}: {e['msg'][0].lower() + e['msg'][1:]}{shown}"


def parse_overrides(pairs: list[str]) -> dict:
    """`['train.lr=0.02', 'model.kwargs.width_mult=0.5']` -> nested dict; values are parsed as YAML."""
    tree: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key.path=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} conflicts with another override of {p}")
        node[parts[-1]] = value
    return tree


def _deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def config_from_dict(raw: dict, overrides: list[str] | None = None, *, source: str = "config") -> Config:
    raw = _deep_update(dict(raw), parse_overrides(overrides or []))
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return config_from_dict(raw, overrides, source=str(path))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
