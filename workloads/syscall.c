/*
 * syscall probe: cost of the system-call boundary and of process primitives.
 *
 * Ops (default order): null read write open_close stat fstat clock_gettime
 * page_fault fork fork_exec pipe_pingpong. Each measurement is calibrated so
 * it lasts >= --min-ms; the metric is ns_per_op (for pipe_pingpong: ns per
 * round trip). With --serve, one burst of an op per command read on stdin
 * (probe_serve() in probe.h); every op is set up and calibrated before the first
 * command is read (probe_serve_calibrate()) and torn down at the end.
 */
#include "probe.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define PROBE "syscall"
#define EXEC_CHILD_ARG "--exec-child"

extern char **environ;

static const char *const OPS[] = {
    "null", "read", "write", "open_close", "stat", "fstat",
    "clock_gettime", "page_fault", "fork", "fork_exec", "pipe_pingpong",
};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static const char USAGE[] =
    "usage: syscall [options]\n"
    "Measures system-call and process-primitive costs; prints `ready`, then one\n"
    "JSON line per measurement (metric ns_per_op).\n"
    "ops: null read write open_close stat fstat clock_gettime page_fault fork\n"
    "     fork_exec pipe_pingpong\n"
    "options:\n" PROBE_COMMON_USAGE PROBE_USAGE_SERVE;

struct ctx {
    int fd_zero, fd_null;
    char exe[4096];
    int to_child[2], from_child[2];
    pid_t child;
};

/* ---------------------------------------------------------------- ops */

static int op_null(void *c, uint64_t n, uint64_t *cks)
{
    (void)c;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++)
        s += (uint64_t)syscall(SYS_getppid);
    *cks = s;
    return 0;
}

static int op_read(void *vc, uint64_t n, uint64_t *cks)
{
    struct ctx *c = vc;
    char b;
    for (uint64_t i = 0; i < n; i++)
        if (read(c->fd_zero, &b, 1) != 1)
            return errno ? errno : EIO;
    *cks = 0;
    return 0;
}

static int op_write(void *vc, uint64_t n, uint64_t *cks)
{
    struct ctx *c = vc;
    char b = 'x';
    for (uint64_t i = 0; i < n; i++)
        if (write(c->fd_null, &b, 1) != 1)
            return errno ? errno : EIO;
    *cks = 0;
    return 0;
}

static int op_open_close(void *c, uint64_t n, uint64_t *cks)
{
    (void)c;
    for (uint64_t i = 0; i < n; i++) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return errno;
        close(fd);
    }
    *cks = 0;
    return 0;
}

static int op_stat(void *c, uint64_t n, uint64_t *cks)
{
    (void)c;
    struct stat st;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (stat("/dev/null", &st) != 0)
            return errno;
        s += (uint64_t)st.st_mode;
    }
    *cks = s;
    return 0;
}

static int op_fstat(void *vc, uint64_t n, uint64_t *cks)
{
    struct ctx *c = vc;
    struct stat st;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (fstat(c->fd_null, &st) != 0)
            return errno;
        s += (uint64_t)st.st_mode;
    }
    *cks = s;
    return 0;
}

static int op_clock_gettime(void *c, uint64_t n, uint64_t *cks)
{
    (void)c;
    struct timespec ts;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s += (uint64_t)ts.tv_nsec;
    }
    *cks = s;
    return 0;
}

static int op_page_fault(void *c, uint64_t n, uint64_t *cks)
{
    (void)c;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        volatile char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return errno;
        p[0] = 1;
        s += (uint64_t)p[0];
        munmap((void *)p, 4096);
    }
    *cks = s;
    return 0;
}

static int wait_ok(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return errno;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFEXITED(st))
            probe_set_err("child exited with status %d", WEXITSTATUS(st));
        else
            probe_set_err("child killed by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
        return ECHILD;
    }
    return 0;
}

static int op_fork(void *c, uint64_t n, uint64_t *cks)
{
    (void)c;
    for (uint64_t i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return errno;
        if (pid == 0)
            _exit(0);
        int rc = wait_ok(pid);
        if (rc)
            return rc;
    }
    *cks = 0;
    return 0;
}

static int op_fork_exec(void *vc, uint64_t n, uint64_t *cks)
{
    struct ctx *c = vc;
    char *argv[] = {c->exe, (char *)EXEC_CHILD_ARG, NULL};
    for (uint64_t i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return errno;
        if (pid == 0) {
            execve(c->exe, argv, environ);
            _exit(127);
        }
        int rc = wait_ok(pid);
        if (rc) {
            if (!probe_errbuf[0] || strstr(probe_errbuf, "127"))
                probe_set_err("execve(%s) failed in the child", c->exe);
            return rc;
        }
    }
    *cks = 0;
    return 0;
}

/* Check once, untimed, that the probe can re-execute itself; give the
 * reason (errno of execve, through a close-on-exec pipe) if not. */
static int setup_fork_exec(struct ctx *c)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return errno;
    pid_t pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0) {
        char *argv[] = {c->exe, (char *)EXEC_CHILD_ARG, NULL};
        close(p[0]);
        execve(c->exe, argv, environ);
        int e = errno;
        if (write(p[1], &e, sizeof e) < 0)
            _exit(126);
        _exit(127);
    }
    close(p[1]);
    int e = 0;
    ssize_t r = read(p[0], &e, sizeof e);
    close(p[0]);
    int rc = wait_ok(pid);
    if (r == (ssize_t)sizeof e) {
        probe_set_err("cannot re-execute the probe: execve(%s): %s", c->exe, strerror(e));
        return e ? e : ENOEXEC;
    }
    return rc;
}

static int op_pipe_pingpong(void *vc, uint64_t n, uint64_t *cks)
{
    struct ctx *c = vc;
    char b = 'p';
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (write(c->to_child[1], &b, 1) != 1)
            return errno ? errno : EIO;
        if (read(c->from_child[0], &b, 1) != 1)
            return errno ? errno : EIO;
        s += (uint64_t)(unsigned char)b;
    }
    *cks = s;
    return 0;
}

static int setup_pipe_pingpong(struct ctx *c)
{
    if (pipe2(c->to_child, O_CLOEXEC) != 0)
        return errno;
    if (pipe2(c->from_child, O_CLOEXEC) != 0) {
        int e = errno;
        close(c->to_child[0]);
        close(c->to_child[1]);
        return e;
    }
    c->child = fork();
    if (c->child < 0) {
        int e = errno;
        close(c->to_child[0]);
        close(c->to_child[1]);
        close(c->from_child[0]);
        close(c->from_child[1]);
        return e;
    }
    if (c->child == 0) {
        /* Echo each byte back; 'q' or EOF (parent gone) ends the child. */
        close(c->to_child[1]);
        close(c->from_child[0]);
        char b;
        while (read(c->to_child[0], &b, 1) == 1 && b != 'q')
            if (write(c->from_child[1], &b, 1) != 1)
                break;
        _exit(0);
    }
    close(c->to_child[0]);
    close(c->from_child[1]);
    return 0;
}

static void teardown_pipe_pingpong(struct ctx *c)
{
    char q = 'q';
    if (write(c->to_child[1], &q, 1) != 1) { /* child already gone: EOF below */ }
    close(c->to_child[1]);
    close(c->from_child[0]);
    int st;
    while (waitpid(c->child, &st, 0) < 0 && errno == EINTR) {}
}

/* ---------------------------------------------------------------- driver */

struct op {
    probe_fn run;
    int (*setup)(struct ctx *);      /* may be NULL */
    void (*teardown)(struct ctx *);  /* may be NULL; called only if setup succeeded */
    uint64_t start_n;
};

static const struct op OP_TABLE[NOPS] = {
    {op_null, NULL, NULL, 64},
    {op_read, NULL, NULL, 64},
    {op_write, NULL, NULL, 64},
    {op_open_close, NULL, NULL, 64},
    {op_stat, NULL, NULL, 64},
    {op_fstat, NULL, NULL, 64},
    {op_clock_gettime, NULL, NULL, 64},
    {op_page_fault, NULL, NULL, 16},
    {op_fork, NULL, NULL, 1},
    {op_fork_exec, setup_fork_exec, NULL, 1},
    {op_pipe_pingpong, setup_pipe_pingpong, teardown_pipe_pingpong, 16},
};

/* The device an op needs that could not be opened, or NULL. */
static const char *missing_device(const struct ctx *c, const struct op *op)
{
    if (op->run == op_read && c->fd_zero < 0)
        return "/dev/zero";
    if ((op->run == op_write || op->run == op_fstat) && c->fd_null < 0)
        return "/dev/null";
    return NULL;
}

/* ---------------------------------------------------------------- serve mode */

struct serve {
    struct ctx *c;
    probe_serve_op op[NOPS];
    int set_up[NOPS];  /* the op's setup succeeded: its teardown is due at the end */
};

/* The op set up and its rate calibrated (once): 0, or -1 after printing the error line
 * (probe_serve_calibrate()). */
static int serve_prepare(struct serve *s, int i)
{
    const struct op *op = &OP_TABLE[i];
    const char *dev = missing_device(s->c, op);
    if (dev) {
        probe_error(PROBE, OPS[i], "cannot open %s", dev);
        return -1;
    }
    probe_errbuf[0] = 0;
    if (op->setup && !s->set_up[i]) {
        int rc = op->setup(s->c);
        if (rc) {
            probe_error(PROBE, OPS[i], "setup failed: %s", probe_strerr(rc));
            return -1;
        }
        s->set_up[i] = 1;
    }
    int rc = probe_serve_calibrate(op->run, s->c, &s->op[i]);
    if (rc)
        probe_error(PROBE, OPS[i], "%s", probe_strerr(rc));
    return rc ? -1 : 0;
}

static void serve_burst(void *vs, const probe_burst *b)
{
    struct serve *s = vs;
    const char *name = OPS[b->op];
    const struct op *op = &OP_TABLE[b->op];
    if (serve_prepare(s, b->op) != 0)
        return;
    double work = 0;
    uint64_t elapsed = 0, cks = 0;
    int rc = probe_serve_burst(op->run, s->c, &s->op[b->op], b, &work, &elapsed, &cks);
    if (rc)
        probe_error(PROBE, name, "%s", probe_strerr(rc));
    else
        probe_emit1(PROBE, name, (uint64_t)llround(work), elapsed, "ns_per_op",
                    (double)elapsed / work, "ns", cks, PROBE_NO_EXTRA);
}

static int serve(const probe_args *a, struct ctx *c)
{
    struct serve s;
    memset(&s, 0, sizeof s);
    s.c = c;
    for (int i = 0; i < NOPS; i++)
        s.op[i].chunk = OP_TABLE[i].start_n;
    probe_quiet = 1;
    for (int i = 0; i < NOPS; i++)
        serve_prepare(&s, i);
    probe_quiet = 0;
    int status = probe_serve(a, serve_burst, &s);
    for (int i = 0; i < NOPS; i++)
        if (s.set_up[i] && OP_TABLE[i].teardown)
            OP_TABLE[i].teardown(c);
    return status;
}

/* Without /proc: argv[0] as is if it has a '/', else its first match in PATH. */
static void find_self(char *out, size_t size, const char *argv0)
{
    snprintf(out, size, "%s", argv0);
    const char *path = getenv("PATH");
    if (strchr(argv0, '/') || !path)
        return;
    while (*path) {
        size_t n = strcspn(path, ":");
        char cand[4096];
        if (n == 0)
            snprintf(cand, sizeof cand, "./%s", argv0);
        else
            snprintf(cand, sizeof cand, "%.*s/%s", (int)n, path, argv0);
        if (access(cand, X_OK) == 0) {
            snprintf(out, size, "%s", cand);
            return;
        }
        path += n;
        if (*path == ':')
            path++;
    }
}

int main(int argc, char **argv)
{
    /* fork_exec's child: exit at once, before anything else (no `ready`). */
    if (argc == 2 && strcmp(argv[1], EXEC_CHILD_ARG) == 0)
        _exit(0);

    probe_ready();

    probe_args a;
    probe_args_init(&a, PROBE, USAGE, OPS, NOPS);
    static const struct option longopts[] = {
        PROBE_COMMON_LONGOPTS,
        PROBE_SERVE_LONGOPT,
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1)
        if (!probe_common_opt(&a, ch, argv))
            probe_die_usage(&a, "unhandled option");
    probe_finish_args(&a, argc, argv);

    struct ctx c;
    memset(&c, 0, sizeof c);
    /* Our own path for fork_exec: /proc/self/exe where /proc exists,
     * argv[0] otherwise. */
    ssize_t len = readlink("/proc/self/exe", c.exe, sizeof c.exe - 1);
    if (len > 0 && len < (ssize_t)sizeof c.exe - 1 && (c.exe[len] = 0, access(c.exe, X_OK) == 0))
        ;
    else
        find_self(c.exe, sizeof c.exe, argv[0]);

    /* A pipe_pingpong child must not outlive us by a SIGPIPE race. */
    signal(SIGPIPE, SIG_IGN);

    c.fd_zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    c.fd_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (a.serve)
        return serve(&a, &c);

    /* Repetitions are interleaved across the ops (rep 1 of every op, then rep 2...):
     * the machine's slow episodes (a neighbour's burst, a previous instance's
     * teardown) last tens to hundreds of ms, so each one lands in at most one or two
     * repetitions of an op, and the launch's median of an op's repetitions stays
     * clean. Back-to-back repetitions of one op fell into the same episode together.
     * Each op keeps its calibrated count from one repetition to the next. */
    uint64_t n[NOPS];
    int dead[NOPS];
    for (int k = 0; k < a.nsel; k++) {
        n[k] = OP_TABLE[a.sel[k]].start_n;
        dead[k] = 0;
    }
    for (uint64_t r = 0; r < a.reps; r++) {
        for (int k = 0; k < a.nsel; k++) {
            int i = a.sel[k];
            const char *name = OPS[i];
            const struct op *op = &OP_TABLE[i];
            if (dead[k])
                continue;
            dead[k] = 1; /* until this repetition is measured */
            const char *dev = missing_device(&c, op);
            if (dev) {
                probe_error(PROBE, name, "cannot open %s", dev);
                continue;
            }
            probe_errbuf[0] = 0;
            if (op->setup) {
                int rc = op->setup(&c);
                if (rc) {
                    probe_error(PROBE, name, "setup failed: %s", probe_strerr(rc));
                    continue;
                }
            }
            uint64_t elapsed = 0, cks = 0;
            int rc = probe_calibrate(op->run, &c, a.min_ms, &n[k], &elapsed, &cks);
            if (rc)
                probe_error(PROBE, name, "%s", probe_strerr(rc));
            else {
                probe_emit1(PROBE, name, n[k], elapsed, "ns_per_op",
                            (double)elapsed / (double)n[k], "ns", cks, PROBE_NO_EXTRA);
                dead[k] = 0;
            }
            if (op->teardown)
                op->teardown(&c);
        }
    }
    return 0;
}
