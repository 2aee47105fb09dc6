/*
 * attach - move this process into cgroups, then become the probe.
 *
 *     attach PROCS_FILE... -- PROGRAM [ARGS...]
 *
 * Writes "0" (this process) to every cgroup.procs file named, then execv()s PROGRAM.
 * The harness starts it without a Python preexec_fn, so the spawn is a vfork (~0.2 ms)
 * rather than a fork of the harness's whole address space (4-20 ms, and variable):
 * the host baseline's startup then measures the host, not Python's fork.
 * Exit status 126 when a cgroup cannot be joined, 127 when PROGRAM cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            fprintf(stderr, "attach: %s: %s\n", argv[i], strerror(errno));
            return 126;
        }
        close(fd);
    }
    if (i + 1 >= argc) {
        fputs("usage: attach PROCS_FILE... -- PROGRAM [ARGS...]\n", stderr);
        return 2;
    }
    execv(argv[i + 1], argv + i + 1);
    fprintf(stderr, "attach: %s: %s\n", argv[i + 1], strerror(errno));
    return 127;
}
