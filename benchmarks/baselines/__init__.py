"""Previous implementations kept as references for before/after benchmarks (not part of seglab)."""
