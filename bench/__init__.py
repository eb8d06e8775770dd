"""Side-by-side benchmarks of nvrflow against the tools operators run today; results in `bench/results/`."""
