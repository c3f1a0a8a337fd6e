"""`torch.compile` for prediction (`seglab predict --backend compile`, `backend="compile"`).

The network is wrapped so that its first call, which compiles, is timed and reported apart from
prediction, and a network that dynamo or inductor cannot handle runs eagerly after one line that says
why (the same promise as `train.compile`). Compilation is per input shape: images of one size (a
folder of camera frames) compile once; a second size makes dynamo mark the shape dynamic.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ..errors import SeglabError


class CompiledNetwork(nn.Module):
    """`net` through `compile_fn` (default `torch.compile`), with an eager fallback. `compile_s` is the
    first call's time (compilation included) once it ran, `failure` the reason when it fell back."""

    def __init__(self, net: nn.Module, *, log: Callable[[str], None] | None = None,
                 compile_fn: Callable[[nn.Module], Callable] | None = None):
        super().__init__()
        self.net = net
        # not a registered submodule: the compiled callable shares `net`'s parameters
        object.__setattr__(self, "_compiled", (compile_fn or torch.compile)(net))
        self.seglab_config = getattr(net, "seglab_config", {})
        self.log = log
        self.compile_s: float | None = None
        self.failure: str | None = None
        self._state = "untried"  # -> "compiled" or "eager"

    def forward(self, *args, **kwargs):
        if self._state == "compiled":
            return self._compiled(*args, **kwargs)
        if self._state == "eager":
            return self.net(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            out = self._compiled(*args, **kwargs)
        except (SeglabError, KeyboardInterrupt):
            raise
        except Exception as e:  # dynamo / inductor cannot handle the model (or no C++ compiler): run eagerly
            self._state = "eager"
            self.failure = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
            self._say(f"torch.compile failed ({self.failure}); predicting without it")
            return self.net(*args, **kwargs)
        self._state = "compiled"
        self.compile_s = round(time.perf_counter() - t0, 2)
        self._say(f"torch.compile: the first call, compilation included, took {self.compile_s:.1f}s")
        return out

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)
