"""Experiment configs: YAML validated by pydantic, overridable from the command line.

A config names one model entrypoint and its keyword arguments, one data set, and a schedule; nothing
is inherited from other files. Every key is checked: an unknown key or a bad value is reported by its
dotted path (`train.lr: expected a number, got 'fast'`), as one line.
"""
from __future__ import annotations

import difflib
import reprlib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, SeglabError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


PositiveInt = Annotated[int, Field(gt=0)]
MAX_TTA_SCALE = 4.0  # a TTA pass at scale s costs s^2 of the image's memory and time
TTAScale = Annotated[float, Field(gt=0, le=MAX_TTA_SCALE)]


def _type_atoms(annotation) -> set:
    """Every type an annotation is made of (through unions, Annotated, tuples, Literal values' types)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        return {annotation}
    if origin is Literal:
        return {type(v) for v in typing.get_args(annotation)}
    args = typing.get_args(annotation)
    if origin is Annotated:  # (type, constraints...)
        args = args[:1]
    atoms = set()
    for arg in args:
        if arg is not Ellipsis:
            atoms |= _type_atoms(arg)
    return atoms


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info):
        """YAML's true / false are not the numbers 1 / 0 (`train.epochs: true` is a mistake, not 1 epoch)."""
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) for v in items):
            atoms = _type_atoms(cls.model_fields[info.field_name].annotation)
            if bool not in atoms and Any not in atoms and atoms & {int, float}:
                raise ValueError("expected a number, not true / false")
        return value


class ModelConfig(_Strict):
    name: str
    num_classes: int | None = Field(None, gt=0, description="defaults to the data set's class count")
    kwargs: dict[str, Any] = {}
    # A model file or a shipped model's name (seglab models --pretrained) to start from.
    weights: str | None = None
    # Fine-tuning to another class count: keep every matching tensor of `weights`, re-initialise the
    # classifier and auxiliary heads (named in the log). Never done without being asked.
    reinit_heads: bool = False
    backbone_weights: str | None = None


class DataConfig(_Strict):
    name: str = "synthetic"
    # null in a recipe for a data set whose location cannot be known in advance: then data.root=... must be
    # given (seglab.data.build_dataset says so)
    root: str | None = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    kwargs: dict[str, Any] = {}
    crop_size: tuple[PositiveInt, PositiveInt] = (128, 128)
    scale_range: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (0.5, 2.0)
    hflip: bool = True
    # Photometric training augmentation (seglab.data.transforms.Photometric). color_jitter unset: 0.2 for
    # semantic models, off for instance and panoptic ones (their recipes were measured without it).
    color_jitter: float | None = Field(None, ge=0, le=1)
    gamma: float = Field(0.0, ge=0, le=0.9)
    blur_prob: float = Field(0.0, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0, le=1)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[Annotated[float, Field(gt=0)], ...] = IMAGENET_STD
    batch_size: int = Field(8, gt=0, description="per process: the global batch is batch_size x processes "
                            "x train.accumulate_steps")
    # "auto": 0 on CPU machines with up to 4 cores (workers would take the cores the step needs), else 2;
    # on CUDA min(8, cores per process). Workers persist across epochs and prefetch 2 batches each.
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    image_labels: str | None = Field(None, description="class-list file of the training images for "
                                     "train.supervision=image_labels (seglab.data.image_labels); relative "
                                     "to data.root unless it exists as given; unset: from the train masks")


class SlideConfig(_Strict):
    crop: tuple[PositiveInt, PositiveInt]
    stride: tuple[PositiveInt, PositiveInt]
    blend: Literal["uniform", "gaussian"] = "gaussian"

    @model_validator(mode="after")
    def _windows_cover_the_image(self):
        if self.stride[0] > self.crop[0] or self.stride[1] > self.crop[1]:
            raise ValueError(f"stride {list(self.stride)} is larger than the window {list(self.crop)}: pixels "
                             f"between windows would get no prediction")
        return self


class OHEMConfig(_Strict):
    """Online hard example mining for the cross-entropy (`SegmentationLoss(ohem_thresh=...)`)."""
    thresh: float = Field(0.7, gt=0, le=1)
    min_kept: float = Field(1 / 16, gt=0, le=1)


class EMAConfig(_Strict):
    """An exponential moving average of the weights (`seglab.engine.ema.ModelEMA`): validated, kept as
    best.safetensors and stored in last.pt. `warmup`: the decay ramps up as (1 + n) / (10 + n) over the
    first updates n, so the early average does not hold on to the random initialisation."""
    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True


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
    seed: int = Field(0, ge=0, lt=2**63)
    out_dir: str = "runs/exp"
    grad_clip: float | None = Field(None, gt=0)
    # Fine-tuning: modules without gradients and with frozen BatchNorm statistics ('backbone' = the
    # pretrained trunk, or dotted module paths), and a learning-rate factor for the trunk.
    freeze: list[str] = []
    backbone_lr_mult: float = Field(1.0, gt=0)
    # Validate and keep (best.safetensors) an exponential moving average of the weights (engine/ema.py),
    # e.g. ema: {decay: 0.999}
    ema: EMAConfig | None = None
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
    scales: tuple[TTAScale, ...] = Field((1.0,), min_length=1)


class CRFConfig(_Strict):
    """Dense CRF parameters (`seglab.inference.dense_crf`); defaults are DeepLab v2's."""
    iterations: int = Field(5, ge=0, le=100)
    pos_w: float = Field(3.0, ge=0)
    pos_xy_std: float = Field(1.0, gt=0)
    bi_w: float = Field(4.0, ge=0)
    bi_xy_std: float = Field(67.0, gt=0)
    bi_rgb_std: float = Field(3.0, gt=0)


class EvalConfig(_Strict):
    slide: SlideConfig | None = None
    tta: TTAConfig | None = None
    crf: CRFConfig | None = None
    # The size images are resized to before the model (and the prediction resized back): a short side
    # (360) or an exact [h, w]; or `scale`, a factor of each image's own size (1.0: as it is). Default:
    # the short side of the images the model was trained on, recorded in its model file.
    imgsz: int | tuple[int, int] | None = None
    scale: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_size(self):
        if self.imgsz is not None and self.scale is not None:
            raise ValueError("set eval.imgsz or eval.scale, not both")
        sizes = (self.imgsz,) if isinstance(self.imgsz, int) else (self.imgsz or ())
        if any(v < 1 for v in sizes):
            raise ValueError(f"eval.imgsz must be positive, got {self.imgsz}")
        return self


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


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 6, 6, 4, 2


def _format_error(err: ValidationError, source: str) -> str:
    # An unknown key explains the other errors (a misspelt section is also "missing"), so report it first.
    errors = sorted(err.errors(), key=lambda x: x["type"] != "extra_forbidden")
    e = errors[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = ".".join(str(p) if str(p).isprintable() and str(p).strip() == str(p) else repr(p) for p in loc) or "<root>"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown config key {path}{_unknown_key_hint(loc)}"
    value = e.get("input")
    shown = f", got {_SHORT.repr(value)}" if not isinstance(value, dict) and value is not None else ""
    msg = e["msg"].removeprefix("Value error, ")
    return f"{source}: config key {path}: {msg[0].lower() + msg[1:]}{shown}"


# --- reading YAML safely: no duplicate keys, no alias bombs, no deep nesting -----------------------------
MAX_CONFIG_NODES = 100_000  # values in a config once its aliases are expanded (real configs have ~100)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build Python objects) that refuses a key given twice in one
    mapping: YAML says keys are unique, PyYAML silently keeps the last one."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple, int] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    k = (key_node.tag, key_node.value)
                    if k in seen:
                        raise _DuplicateKey(key_node.value, seen[k], key_node.start_mark.line + 1)
                    seen[k] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _expanded_size(obj) -> int:
    """How many values `obj` holds with every shared (aliased) part counted each time it is used, in time
    linear in the distinct parts; ValueError for a structure that contains itself."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(o) -> int:
        if not isinstance(o, (dict, list)):
            return 1
        key = id(o)
        if key in memo:
            return memo[key]
        if key in active:
            raise ValueError("a value refers to itself (a recursive alias)")
        active.add(key)
        children = [*o.keys(), *o.values()] if isinstance(o, dict) else o
        n = 1 + sum(size(c) for c in children)
        active.discard(key)
        memo[key] = n
        return n

    return size(obj)


def parse_yaml(text: str, source: str, *, text_if_invalid: bool = False):
    """A YAML document as plain data, or a one-line ConfigError naming `source` (and the line): invalid
    YAML (with `text_if_invalid`: the text itself instead), a duplicate key, an alias bomb or recursive
    alias, nesting too deep to read."""
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as e:
        raise ConfigError(f"{source} line {e.second}: key {e.key!r} appears twice in one mapping (first on line "
                          f"{e.first}); keep one") from None
    except (yaml.YAMLError, ValueError) as e:
        if text_if_invalid:
            return text
        if isinstance(e, ValueError):  # a value YAML recognises but Python cannot build (2021-13-45)
            raise ConfigError(f"{source}: not valid YAML ({str(e)[:120]})") from None
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None
    try:
        size = _expanded_size(data)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    if size > MAX_CONFIG_NODES:
        raise ConfigError(f"{source}: holds {size} values once its aliases are expanded (more than "
                          f"{MAX_CONFIG_NODES}): an alias bomb?")
    return data


class _Replace(dict):
    """A mapping written as an override's value (`model.kwargs={}`): it replaces the config's mapping
    instead of being merged into it."""


def parse_overrides(pairs: list[str]) -> dict:
    """`['train.lr=0.02', 'model.kwargs.width_mult=0.5']` -> nested dict; values are parsed as YAML. A
    mapping value replaces the key's mapping (`model.kwargs={}` clears it); dotted keys merge into it."""
    tree: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key.path=value")
        key, raw = pair.split("=", 1)
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {pair!r}: the key must be a dotted path like train.lr")
        value = parse_yaml(raw, f"override {key}", text_if_invalid=True) if raw != "" else None
        if isinstance(value, dict):
            value = _Replace(value)
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict) or isinstance(node, _Replace):
                raise ConfigError(f"override {pair!r} conflicts with another override of {p}")
        node[parts[-1]] = value
    return tree


def _deep_update(base: dict, upd: dict) -> dict:
    """`base` with `upd` merged in (new dicts; neither argument is changed)."""
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and not isinstance(v, _Replace) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = dict(v) if isinstance(v, _Replace) else v
    return out


def config_from_dict(raw: dict, overrides: list[str] | None = None, *, source: str = "config") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections at the top level")
    raw = _deep_update(raw, parse_overrides(overrides or []))
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None


RECIPES = Path(__file__).resolve().parent / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped inside the package (`camvid/bisenetv2`, `demo`, ...)."""
    return sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of shipped recipe `name` (with or without `.yaml`, or `configs/<name>`)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    stem = stem[len("configs/"):] if stem.startswith("configs/") else stem
    p = RECIPES / f"{stem}.yaml"
    if not p.is_file():
        close = difflib.get_close_matches(stem, list_recipes(), n=3, cutoff=0.4)
        raise ConfigError(f"config file not found: {name} (nor a shipped recipe: "
                          + (f"did you mean {', '.join(close)}?)" if close else "seglab config list shows them)"))
    return p


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """A config file (UTF-8, or UTF-16 with a byte-order mark) or the name of a shipped recipe
    (`camvid/bisenetv2`), with `key=value` overrides, checked."""
    from .utils.io import read_text_file

    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"config file not found: {path} is not a file")
        path = recipe_path(str(path))
    try:
        text = read_text_file(path, "config file")
    except SeglabError as e:
        raise ConfigError(str(e)) from None
    raw = parse_yaml(text, str(path))
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return config_from_dict(raw, overrides, source=str(path))


def dump_config(cfg: Config) -> str:
    """YAML that `load_config` reads back into the same config (integer keys, e.g. a label_map's, stay
    integers: JSON mode would turn them into strings)."""
    return yaml.safe_dump(_plain(cfg.model_dump(mode="python")), sort_keys=False)


def _plain(obj):
    """Tuples -> lists, recursively, so that yaml.safe_dump writes plain YAML."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
