"""Inference options and where they come from.

The same settings (input size, sliding window, test-time augmentation, dense CRF, precision, instance
score threshold) are read from four places, each overriding the one before, component by component:
0. the size of the images the model was trained on (`train_size` in the model file): inputs are resized
   to its short side (`seglab.inference.scale`);
1. the settings stored in the model file (`seglab pack --tta flip --imgsz 360` writes them);
2. a config's `eval:` section (`seglab eval CONFIG`, validation during training);
3. explicit options (`--imgsz`, `--scale`, `--slide`, `--tta`, `--crf`, `--precision`, or keyword
   arguments in Python).
So `seglab predict`, `seglab eval` and the Python API predict alike unless told otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import SeglabError
from .base import resolve_precision
from .scale import InputScale, parse_imgsz, parse_scale

BACKENDS = ("auto", "eager", "compile")


@dataclass(frozen=True)
class PredictOptions:
    slide: tuple[int, int] | None = None   # sliding-window crop (h, w); None: the whole image at once
    stride: tuple[int, int] | None = None  # window stride (default two thirds of the crop)
    blend: str = "gaussian"                # "gaussian" or "uniform" weights where windows overlap
    tta: dict | None = None                # {"flip": bool, "scales": (s, ...)}; None: no augmentation
    crf: dict | None = None                # dense CRF keyword arguments; None: no CRF
    precision: str = "fp32"                # "fp32", "bf16" or "fp16" autocast
    score_thresh: float = 0.5              # instance models: lowest score drawn on overlays
    resize: InputScale | None = None       # the size images are predicted at (None: their own size)
    backend: str = "auto"                  # "auto": the fastest path that keeps the labels; "eager": as is;
                                           # "compile": "auto" + torch.compile

    @property
    def tta_active(self) -> bool:
        return bool(self.tta) and (bool(self.tta.get("flip")) or tuple(self.tta.get("scales", (1.0,))) != (1.0,))

    def semantic_options(self) -> list[str]:
        """The semantic-only options in use (an instance or panoptic task refuses them)."""
        return [name for name, on in (("--slide", self.slide is not None), ("--tta", self.tta_active),
                                      ("--crf", self.crf is not None)) if on]

    def with_(self, **changes) -> PredictOptions:
        return replace(self, **changes)


def parse_slide(text: str | None) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """`512,stride=341` or `512x384,stride=341x256` -> ((512, 512), (341, 341)); '' / None -> (None, None)."""
    if not text:
        return None, None

    def pair(v: str):
        parts = v.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise SeglabError(f"--slide: expected integers like 512 or 512x384, got {v!r}") from None
        if len(nums) not in (1, 2) or min(nums) <= 0:
            raise SeglabError(f"--slide: expected positive sizes like 512 or 512x384, got {v!r}")
        return (nums[0], nums[-1])

    crop_text, *rest = text.split(",")
    crop, stride = pair(crop_text), None
    for item in rest:
        key, _, value = item.partition("=")
        if key.strip() != "stride":
            raise SeglabError(f"--slide: unknown option {key!r} (expected stride=N)")
        stride = pair(value)
    if stride is None:  # two thirds of the window, as the predictor's default
        stride = (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise SeglabError(f"--slide: stride {stride[0]}x{stride[1]} is larger than the window {crop[0]}x{crop[1]}: "
                          f"pixels between windows would get no prediction")
    return crop, stride


def resolve_options(*, model_config: dict | None = None, stored: dict | None = None, eval_config=None,
                    slide: str | None = None, tta: str | dict | None = None, crf: str | dict | None = None,
                    precision: str | None = None, bf16: bool = False, score_thresh: float | None = None,
                    imgsz=None, scale=None, backend: str | None = None) -> PredictOptions:
    """Options from the model (`model_config`, a model's `seglab_config`: its `train_size` and stored
    `inference` settings; or `stored`, the settings alone), then `eval_config` (a
    `seglab.config.EvalConfig` or a dict of the same shape), then the explicit arguments (strings as on
    the command line; `imgsz` also an int or (h, w), `scale` a number)."""
    from ..config import CRFConfig, EvalConfig, TTAConfig
    from .crf_search import parse_crf_params
    from .tta import parse_tta_spec

    model_config = model_config or {}
    stored = stored if stored is not None else model_config.get("inference")
    opts: dict = {}
    train_size = model_config.get("train_size")
    if train_size:
        opts["resize"] = InputScale(short_side=int(min(train_size)))
    for source in (stored, eval_config):
        if source is None:
            continue
        ev = source if isinstance(source, EvalConfig) else EvalConfig.model_validate(source)
        if ev.slide is not None:
            opts.update(slide=tuple(ev.slide.crop), stride=tuple(ev.slide.stride), blend=ev.slide.blend)
        if ev.tta is not None:
            opts["tta"] = ev.tta.model_dump()
        if ev.crf is not None:
            opts["crf"] = ev.crf.model_dump()
        if ev.imgsz is not None:
            opts["resize"] = InputScale.from_imgsz(ev.imgsz)
        if ev.scale is not None:
            opts["resize"] = InputScale(factor=ev.scale)
    if imgsz is not None and scale is not None:
        raise SeglabError("give --imgsz or --scale, not both")
    if imgsz is not None:
        opts["resize"] = parse_imgsz(imgsz) if isinstance(imgsz, str) else InputScale.from_imgsz(imgsz)
    if scale is not None:
        opts["resize"] = parse_scale(scale)
    if slide:
        opts["slide"], opts["stride"] = parse_slide(slide)
    if tta is not None:
        try:
            opts["tta"] = parse_tta_spec(tta) if isinstance(tta, str) else dict(tta)
        except ValueError as e:
            raise SeglabError(f"--tta: {e}") from None
        opts["tta"] = _checked(TTAConfig, opts["tta"], "--tta")
    if crf is not None:
        extra = parse_crf_params(crf) if isinstance(crf, str) else dict(crf)
        opts["crf"] = _checked(CRFConfig, {**(opts.get("crf") or {}), **extra}, "--crf")
    if score_thresh is not None:
        if not 0.0 <= score_thresh <= 1.0:
            raise SeglabError(f"--score-thresh must be in [0, 1], got {score_thresh}")
        opts["score_thresh"] = float(score_thresh)
    if backend is not None:
        if backend not in BACKENDS:
            raise SeglabError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        opts["backend"] = backend
    opts["precision"] = resolve_precision(precision, bf16)
    return PredictOptions(**opts)


def _checked(schema, values: dict, option: str) -> dict:
    """`values` validated by a config section (`TTAConfig`, `CRFConfig`): the same limits as in a config."""
    from pydantic import ValidationError

    try:
        return schema.model_validate(values).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SeglabError(f"{option}: {where}: {err['msg'].removeprefix('Value error, ')}, got "
                          f"{err.get('input')!r:.60}") from None
