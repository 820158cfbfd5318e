"""Benchmarks of the aggregator library, importing nothing of cg2a_ext.rl: the fused ops against the
reference (``python -m cg2a_ext.bench.ops``) and two builds side by side
(``python -m cg2a_ext.bench.compare_builds OLD_TREE NEW_TREE``). The entry point over every suite
(``cg2a-bench``) and the RL application's suites live in ``cg2a_ext.rl.bench``.
"""
