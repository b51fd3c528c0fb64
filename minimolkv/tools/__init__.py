"""The tooling around the teaching code: the command line (cli), the benchmark
(bench, bench_report), the comparison of kinds (compare) and the figures (plots).
Nothing here is needed to read or check the math."""
