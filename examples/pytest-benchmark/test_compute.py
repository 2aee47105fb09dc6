"""A pure-compute benchmark: no system call inside the timed loop, so an isolation layer
should cost nothing here (CPU parity); what it does cost shows the timer's own price."""

N = 20_000


def kernel(n):
    """Deterministic integer and float work (an LCG and a running float sum)."""
    x, acc = 12345, 0.0
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc += (x % 1000) / (i + 1)
    return x, acc


def test_compute(benchmark):
    x, acc = benchmark(kernel, N)
    assert x == 199688473 and abs(acc - 5467.637888560495) < 1e-6  # the work was done
