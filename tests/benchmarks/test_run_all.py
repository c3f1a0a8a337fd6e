"""benchmarks/run_all.py: the comparison with committed results and the generated docs tables (no
benchmark is run here; the records are hand-made)."""
import importlib.util
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metrics_record(after_ms: float, dtype: str = "int64") -> dict:
    return {"bench": "semantic_metrics_update", "classes": 19, "dtype": dtype, "before_ms_per_MP": 15.0,
            "after_ms_per_MP": after_ms, "speedup": round(15.0 / after_ms, 1), "same_confusion": True}


def test_compare_lists_only_times_beyond_the_tolerance(run_all):
    spec = run_all.BENCHMARKS["metrics"]
    old = [metrics_record(1.0), metrics_record(1.0, "uint8")]
    new = [metrics_record(1.1), metrics_record(1.3, "uint8")]  # +10% (within 15%) and +30%
    slower, compared = run_all.compare("metrics", spec, old, new, tolerance=0.15)
    assert compared == 2
    assert len(slower) == 1 and '"uint8"' in slower[0] and "1.30x" in slower[0]
    # before_ms_per_MP is neither a time nor a rate of the new code: never compared
    assert run_all.compare("metrics", spec, old, old, tolerance=0.15) == ([], 2)


def test_compare_flags_a_lower_rate_and_skips_new_measurements(run_all):
    spec = run_all.BENCHMARKS["speed"]
    old = [{"bench": "matmul_peak", "fp32_GFLOP_s": 180.0}]
    new = [{"bench": "matmul_peak", "fp32_GFLOP_s": 120.0}, {"bench": "inference", "model": "x", "latency_ms": 9.0}]
    slower, compared = run_all.compare("speed", spec, old, new, tolerance=0.15)
    assert compared == 1 and len(slower) == 1 and "fp32_GFLOP_s" in slower[0]


def test_docs_tables_come_from_the_results_files(run_all, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    (tmp_path / "metrics_speed_t.jsonl").write_text(json.dumps(metrics_record(0.9)) + "\n")
    text = run_all.docs_section("t")
    assert "| 19 | int64 | 15.0 | 0.9 | 16.7 | True |" in text
    assert "Deformable" not in text  # no results file, no table
