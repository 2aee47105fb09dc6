/*
 * attach - move this process into cgroups, optionally into a root filesystem, then
 * become the probe.
 *
 *     attach [--root TREE --scratch DIR [--bind SRC:DEST]... [--bind-ro SRC:DEST]...]
 *            PROCS_FILE... -- PROGRAM [ARGS...]
 *
 * Writes "0" (this process) to every cgroup.procs file named, then execv()s PROGRAM.
 * The harness starts it without a Python preexec_fn, so the spawn is a vfork (~0.2 ms)
 * rather than a fork of the harness's whole address space (4-20 ms, and variable):
 * the host baseline's startup then measures the host, not Python's fork.
 *
 * With --root, PROGRAM runs chrooted into TREE (an isobench rootfs) without changing it:
 * in a private mount namespace of its own, an overlay (lower TREE, upper and work in
 * DIR/upper and DIR/work, both existing and empty) is mounted on DIR/root; every --bind
 * mounts SRC (recursively) on DEST inside it, the directory made in the overlay when
 * missing (--bind-ro: read-only); then chroot there, and PROGRAM is a path inside.
 * Everything goes with the namespace when the last process in it exits, kill -9
 * included; only DIR's files stay, for the harness to remove.
 *
 * Exit status 126 when a cgroup cannot be joined or the root cannot be set up, 127 when
 * PROGRAM cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_BINDS 16

struct bind {
    const char *src;
    const char *dest;
    int ro;
};

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "attach: %s %s: %s\n", what, path, strerror(errno));
    return 126;
}

/* mkdir -p of an absolute path (below the overlay's root: never the tree itself). */
static int make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST)
            return -1;
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int enter_root(const char *tree, const char *dir, struct bind *binds, int nbinds)
{
    char root[4096], opts[12288], target[8192];
    if (snprintf(root, sizeof root, "%s/root", dir) >= (int)sizeof root ||
        snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", tree,
                 dir, dir) >= (int)sizeof opts) {
        errno = ENAMETOOLONG;
        return fail("path", dir);
    }
    if (unshare(CLONE_NEWNS) != 0)
        return fail("unshare", "(mount namespace)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return fail("make private", "/");
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        return fail("mkdir", root);
    if (mount("overlay", root, "overlay", 0, opts) != 0)
        return fail("overlay on", tree);
    for (int i = 0; i < nbinds; i++) {
        if (snprintf(target, sizeof target, "%s%s", root, binds[i].dest) >= (int)sizeof target) {
            errno = ENAMETOOLONG;
            return fail("bind", binds[i].dest);
        }
        if (make_dirs(target) != 0)
            return fail("mkdir", binds[i].dest);
        if (mount(binds[i].src, target, NULL, MS_BIND | MS_REC, NULL) != 0)
            return fail("bind", binds[i].src);
        if (binds[i].ro &&
            mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0)
            return fail("read-only", binds[i].dest);
    }
    if (chdir(root) != 0 || chroot(".") != 0 || chdir("/") != 0)
        return fail("chroot", root);
    return 0;
}

static int usage(void)
{
    fputs("usage: attach [--root TREE --scratch DIR [--bind[-ro] SRC:DEST]...] "
          "PROCS_FILE... -- PROGRAM [ARGS...]\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *tree = NULL, *dir = NULL;
    struct bind binds[MAX_BINDS];
    int nbinds = 0, i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2]; i += 2) {
        if (strcmp(argv[i], "--root") == 0) {
            tree = argv[i + 1];
        } else if (strcmp(argv[i], "--scratch") == 0) {
            dir = argv[i + 1];
        } else if (strcmp(argv[i], "--bind") == 0 || strcmp(argv[i], "--bind-ro") == 0) {
            char *colon = strrchr(argv[i + 1], ':');
            if (nbinds == MAX_BINDS || colon == NULL || colon[1] != '/')
                return usage();
            *colon = '\0';
            binds[nbinds++] = (struct bind){argv[i + 1], colon + 1, argv[i][6] == '-'};
        } else {
            return usage();
        }
    }
    if ((tree == NULL) != (dir == NULL) || (tree == NULL && nbinds > 0))
        return usage();
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            fprintf(stderr, "attach: %s: %s\n", argv[i], strerror(errno));
            return 126;
        }
        close(fd);
    }
    if (i + 1 >= argc)
        return usage();
    if (tree != NULL) {
        int r = enter_root(tree, dir, binds, nbinds);
        if (r != 0)
            return r;
    }
    execv(argv[i + 1], argv + i + 1);
    fprintf(stderr, "attach: %s: %s\n", argv[i + 1], strerror(errno));
    return 127;
}
