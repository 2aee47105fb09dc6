"""Metrics collected around a launch.

- `bench.metrics.cgroup`: cgroup v1 / v2 readers behind logical names, and the cgroups
  isobench creates for the instances it runs.
- `bench.metrics.procs`: psutil metrics of process trees (shims, sandboxes, VMMs).
- `bench.metrics.noise`: system-wide noise indicators (steal, load, governor, SMT...).

Import the submodule you need; nothing is re-exported here.
"""
