"""Syscall-heavy benchmarks: each call crosses the kernel boundary, where an isolation
layer that intercepts system calls (gVisor's Sentry, a seccomp filter) adds its cost."""

import os
import sys

LOOP = 1000  # calls per benchmarked function: long enough that the timer's own cost is small


def getppid_loop():
    for _ in range(LOOP):
        os.getppid()  # not cached by glibc (since 2.25): one real syscall each time


def stat_loop(path):
    for _ in range(LOOP):
        os.stat(path)  # path walk + stat in the kernel


def test_getppid(benchmark):
    benchmark(getppid_loop)


def test_stat(benchmark):
    benchmark(stat_loop, sys.executable)  # a file every environment's rootfs has
