"""`backend="compile"` (`seglab predict --backend compile`): the network through torch.compile with the
first call's time reported, the same labels as the default path, and an eager fallback that says why.
Dynamo's "eager" backend stands in for inductor here: it captures the same graph without spending
tens of seconds in the C++ compiler."""
import functools

import numpy as np
import pytest
import torch

import seglab
from seglab.inference.compiled import CompiledNetwork
from seglab.inference.load import compile_network, load_predictor

TINY = {"width_mult": 0.25, "head_channels": 16}
EAGER_DYNAMO = functools.partial(torch.compile, backend="eager")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return seglab.create_model("bisenetv2", num_classes=4, **TINY).eval()


def _image():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_compiled_prediction_equals_the_default_path(model):
    _, reference, _ = load_predictor(model, device="cpu")
    lines = []
    _, predictor, _ = load_predictor(model, device="cpu")
    compile_network(predictor, log=lines.append, compile_fn=EAGER_DYNAMO)
    compiled = predictor.model
    assert isinstance(compiled, CompiledNetwork)
    a = reference.predict_image(_image()).labels
    b = predictor.predict_image(_image()).labels
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert compiled.compile_s is not None and compiled.failure is None
    assert any("torch.compile: the first call" in ln for ln in lines)
    assert "torch.compile" in predictor.notes[-1]


def test_a_network_that_does_not_compile_runs_eagerly_and_says_why(model):
    def broken(net):
        def call(*args, **kwargs):
            raise RuntimeError("inductor: no C++ compiler found\nmore detail")
        return call

    _, reference, _ = load_predictor(model, device="cpu")
    lines = []
    _, predictor, _ = load_predictor(model, device="cpu")
    compile_network(predictor, log=lines.append, compile_fn=broken)
    b = predictor.predict_image(_image()).labels
    assert np.array_equal(np.asarray(reference.predict_image(_image()).labels), np.asarray(b))
    assert predictor.model.failure == "RuntimeError: inductor: no C++ compiler found"
    assert lines == ["torch.compile failed (RuntimeError: inductor: no C++ compiler found); predicting without it"]


def test_backend_compile_is_an_option_of_load_predictor(model, monkeypatch):
    monkeypatch.setattr(torch, "compile", EAGER_DYNAMO)
    lines = []
    _, predictor, resolved = load_predictor(model, device="cpu", backend="compile", log=lines.append)
    assert resolved.backend == "compile" and isinstance(predictor.model, CompiledNetwork)
    predictor.predict_image(_image())
    assert lines and "took" in lines[0]
