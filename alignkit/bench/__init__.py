"""``alignkit bench``: the paper's comparison of CCA, DPO, Unlearning, NCA and CFG, end to end on a CPU.

See ``alignkit.bench.suite`` for the steps and ``benchmarks/bench_*.toml`` for every setting."""
