"""Model files from elsewhere: truncated or random safetensors, metadata of the wrong type or size, other
architectures, crafted sizes, hostile pickles. Each is refused with one line naming the file, by the Python
loader and by every command that reads a model file, before anything large is allocated."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

import seglab
from seglab.errors import SeglabError

from robustness.conftest import assert_refused, run_cli, snapshot, write_config
from robustness.corpus import model_file_cases, pickle_cases, write

_CASES: dict[str, bytes] = {}


def _cases(valid: Path) -> dict[str, bytes]:
    if not _CASES:
        _CASES.update(model_file_cases(valid))
    return _CASES


CASE_NAMES = ["zero_bytes", "random_bytes", "truncated", "header_length_huge", "header_not_json",
              "header_offsets_past_end", "no_seglab_metadata", "metadata_not_json", "metadata_a_list",
              "metadata_deeply_nested", "name_unknown", "name_not_a_string", "num_classes_string",
              "num_classes_bool", "num_classes_negative", "num_classes_huge", "kwargs_a_list", "kwargs_wrong_type",
              "kwargs_huge_width", "kwargs_unknown", "kwargs_names_a_file", "classes_wrong_length",
              "classes_not_strings", "palette_bad_colour", "mean_strings", "std_zero", "mean_std_lengths_differ",
              "inference_bad", "inference_huge_tta", "other_architecture", "tensor_missing", "tensor_extra",
              "tensor_wrong_shape", "tensor_int_dtype"]


def test_the_corpus_names_every_case(model_file):
    assert sorted(_cases(model_file)) == sorted(CASE_NAMES)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_hostile_model_file_is_refused_by_the_loader_and_predict(case, model_file, photo, tmp_path):
    path = write(tmp_path, f"{case}.safetensors", _cases(model_file)[case])
    with pytest.raises(SeglabError) as info:
        seglab.load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    out = tmp_path / "out"
    before = snapshot(photo.parent)
    assert_refused(run_cli("predict", "--checkpoint", path, photo, "--out", out), str(path))
    assert snapshot(photo.parent) == before
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["truncated", "metadata_a_list", "num_classes_huge", "other_architecture",
                                  "tensor_wrong_shape", "inference_bad"])
def test_hostile_model_file_is_refused_by_eval_and_pack(case, model_file, tiny_synthetic, tmp_path):
    path = write(tmp_path, f"{case}.safetensors", _cases(model_file)[case])
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    assert_refused(run_cli("eval", cfg, "--checkpoint", path, "--out", tmp_path / "ev"), str(path))
    assert_refused(run_cli("pack", path, "--out", tmp_path / "p.safetensors"), str(path))
    assert not (tmp_path / "ev").exists() and not (tmp_path / "p.safetensors").exists()


def test_a_crafted_num_classes_allocates_nothing(model_file, tmp_path):
    """num_classes = 4e9 would ask for tens of GB if the model were built before the file is checked: under
    a 3 GB address-space limit the loader still answers with its one line."""
    path = write(tmp_path, "huge.safetensors", _cases(model_file)["num_classes_huge"])
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from seglab.cli import main; sys.exit(main(['pack', sys.argv[1], '--out', sys.argv[2]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "o.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and str(path) in proc.stderr
    assert resource.RLIMIT_AS  # the limit exists on this platform


def test_a_file_without_metadata_is_plain_weights_for_eval(model_file, tiny_synthetic, tmp_path):
    """Without seglab metadata a safetensors file is weights for the config's architecture (accepted
    when they fit), not a refusal."""
    path = write(tmp_path, "plain.safetensors", _cases(model_file)["no_seglab_metadata"])
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    assert run_cli("eval", cfg, "--checkpoint", path, "--out", tmp_path / "ev").status == 0


@pytest.mark.parametrize("case", sorted(pickle_cases()))
def test_hostile_training_state_is_refused_and_never_executed(case, tiny_synthetic, tmp_path):
    marker = Path("/tmp/seglab_pickle_executed")
    marker.unlink(missing_ok=True)
    data = pickle_cases()[case]
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, run)
    last = write(run, "last.pt", data)
    assert_refused(run_cli("eval", cfg, "--checkpoint", last, "--out", tmp_path / "ev"), str(last))
    assert_refused(run_cli("train", cfg, "--resume"), str(last))
    assert not marker.exists(), "a pickle ran code"
    assert last.read_bytes() == data
    weights = write(tmp_path, "w.pt", data)
    with pytest.raises(SeglabError, match="w.pt"):
        seglab.create_model("unet", num_classes=6, base_channels=4, weights=str(weights))
    assert not marker.exists()
