/*
 * userrun probe: runs a user's own command (a pytest-benchmark suite, sysbench, fio...)
 * inside the environment and hands its output back through the probe contract, so the
 * command takes the same path as every probe: `ready`, then JSON lines on stdout.
 *
 *     userrun [--cd DIR] [--out] -- ARGV...
 *     userrun --server --port P [--cd DIR] -- ARGV...
 *
 * --cd DIR   run ARGV in DIR (default /): the same working directory everywhere
 * --out      make a private directory under /tmp and replace "{out}" in every element
 *            of ARGV with the path of a file in it (pytest's --benchmark-json={out});
 *            that file's content is handed back too, then the directory is removed
 * --server   ARGV is a server that listens on TCP port P (--port): a held instance.
 *            `ready` is printed only once a TCP connect to 127.0.0.1:P succeeds (tried
 *            every POLL_MS ms), so the harness's client starts against a listening
 *            server. On SIGTERM or SIGINT, ARGV gets SIGTERM (SIGKILL after STOP_GRACE_S
 *            s), then its stderr tail and exit line are printed and userrun exits 0. If
 *            ARGV exits before it listens, its stderr tail and exit line are printed
 *            without `ready`, and on userrun's own stderr that tail and a last line
 *            "userrun: ARGV0 exited with status S before it listened on port P: <the
 *            log's last line>" (the reason a harness that saw no `ready` gives), and
 *            userrun exits 1. ARGV's stdout and stderr both go to the stderr tail (a
 *            server's log: only its last STDERR_KEEP bytes are kept). userrun knows
 *            nothing of templates: the harness puts the port in ARGV itself.
 *
 * ARGV runs with a fixed environment (PATH, HOME=/root, LANG=C.UTF-8,
 * PYTHONDONTWRITEBYTECODE=1, TMPDIR=/tmp): nothing of the harness's own environment, so
 * the command sees the same variables on the host, in containers and in guests. Its
 * stdin is /dev/null; its stdout and stderr are captured (not passed through).
 *
 * Output: `ready`, then, once ARGV has exited, its captured streams as chunk lines
 *   {"probe":"userrun","op":"chunk","iterations":1,"elapsed_ns":0,
 *    "metrics":{"bytes":N},"units":{"bytes":"B"},"checksum":0,
 *    "stream":"stdout"|"file"|"stderr","seq":K,"b64":"<base64 of N bytes>"}
 * (chunks of CHUNK bytes: every line stays short for every reader of probe output),
 * then one line with how it ended:
 *   {"probe":"userrun","op":"exit","iterations":1,"elapsed_ns":<ARGV's wall time>,
 *    "metrics":{"exit_status":S},"units":{"exit_status":"status"},"checksum":0,
 *    "signal":SIG,"file":true|false,"truncated":["stdout",..]}
 * S is ARGV's exit status (128+SIG when a signal ended it; 127 when it could not be
 * run: the reason is on its stderr). stderr keeps its last STDERR_KEEP bytes; stdout and
 * the file keep their first MAX_CAPTURE bytes ("truncated" names what was cut).
 * userrun itself exits 0 once it has reported, 2 on bad arguments, 1 when it could not
 * start ARGV at all (a pipe or fork failed: an error line says why).
 */
#include "probe.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#define CHUNK 2048                     /* raw bytes per chunk line (2732 in base64) */
#define MAX_CAPTURE (64u << 20)        /* stdout and the file: the first 64 MiB */
#define STDERR_KEEP 4096               /* stderr: the last 4 KiB */
#define OUT_MARK "{out}"
#define POLL_MS 20                     /* --server: how often the port is tried */
#define STOP_GRACE_S 5                 /* --server: SIGTERM, then SIGKILL after this */

static const char USAGE[] =
    "usage: userrun [--cd DIR] [--out] -- ARGV...\n"
    "       userrun --server --port P [--cd DIR] -- ARGV...\n"
    "Prints `ready`, runs ARGV (stdin /dev/null, a fixed environment) with its output\n"
    "captured, then prints that output as base64 chunk lines and how ARGV ended.\n"
    "  --cd DIR  run ARGV in DIR (default /)\n"
    "  --out     replace {out} in ARGV with a file in a private directory under /tmp\n"
    "            and hand that file's content back too\n"
    "  --server  ARGV is a server on TCP port P: `ready` once 127.0.0.1:P accepts a\n"
    "            connection; SIGTERM stops it (then its stderr tail and exit line)\n";

typedef struct {
    char *data;
    size_t len, cap, limit;
    int truncated;
} buf_t;

static void buf_add(buf_t *b, const char *p, size_t n)
{
    if (b->len + n > b->limit) {
        b->truncated = 1;
        n = b->limit > b->len ? b->limit - b->len : 0;
    }
    if (!n)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->truncated = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* stderr: keep the last STDERR_KEEP bytes */
static char err_tail[STDERR_KEEP];
static size_t err_len;
static int err_cut;

static void tail_add(const char *p, size_t n)
{
    if (n >= STDERR_KEEP) {
        memcpy(err_tail, p + n - STDERR_KEEP, STDERR_KEEP);
        err_cut |= n > STDERR_KEEP || err_len > 0;
        err_len = STDERR_KEEP;
        return;
    }
    if (err_len + n > STDERR_KEEP) {
        size_t drop = err_len + n - STDERR_KEEP;
        memmove(err_tail, err_tail + drop, err_len - drop);
        err_len -= drop;
        err_cut = 1;
    }
    memcpy(err_tail + err_len, p, n);
    err_len += n;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void emit_chunks(const char *stream, const char *p, size_t n)
{
    char out[(CHUNK + 2) / 3 * 4 + 1];
    for (size_t off = 0, seq = 0; off < n; off += CHUNK, seq++) {
        size_t m = n - off < CHUNK ? n - off : CHUNK, o = 0;
        const unsigned char *s = (const unsigned char *)p + off;
        for (size_t i = 0; i < m; i += 3) {
            unsigned v = (unsigned)s[i] << 16;
            if (i + 1 < m)
                v |= (unsigned)s[i + 1] << 8;
            if (i + 2 < m)
                v |= s[i + 2];
            out[o++] = B64[(v >> 18) & 63];
            out[o++] = B64[(v >> 12) & 63];
            out[o++] = i + 1 < m ? B64[(v >> 6) & 63] : '=';
            out[o++] = i + 2 < m ? B64[v & 63] : '=';
        }
        out[o] = 0;
        printf("{\"probe\":\"userrun\",\"op\":\"chunk\",\"iterations\":1,\"elapsed_ns\":0,"
               "\"metrics\":{\"bytes\":%zu},\"units\":{\"bytes\":\"B\"},\"checksum\":0,"
               "\"stream\":\"%s\",\"seq\":%zu,\"b64\":\"%s\"}\n",
               m, stream, seq, out);
    }
    fflush(stdout);
}

static void read_file(const char *path, buf_t *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char tmp[65536];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof tmp)) > 0)
        buf_add(b, tmp, (size_t)n);
    close(fd);
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(dir);
}

/* Replace every OUT_MARK in s with path (a new string). */
static char *subst(const char *s, const char *path)
{
    size_t n = 0, ml = strlen(OUT_MARK), pl = strlen(path);
    for (const char *p = strstr(s, OUT_MARK); p; p = strstr(p + ml, OUT_MARK))
        n++;
    char *r = malloc(strlen(s) + n * pl + 1), *o = r;
    if (!r)
        probe_die("userrun", "out of memory");
    while (*s) {
        if (strncmp(s, OUT_MARK, ml) == 0) {
            memcpy(o, path, pl);
            o += pl;
            s += ml;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
    return r;
}

static char *const FIXED_ENV[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "TMPDIR=/tmp",
    NULL,
};

static void drain(int fd, buf_t *out, int is_err, int *open_fd)
{
    char tmp[65536];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n > 0) {
            if (is_err)
                tail_add(tmp, (size_t)n);
            else
                buf_add(out, tmp, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(fd);
            *open_fd = 0;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return;
    }
}

/* The exit line: how ARGV ended (status: waitpid's), what was cut. */
static void print_exit(uint64_t elapsed_ns, int status, int has_file, int out_cut, int file_cut)
{
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    printf("{\"probe\":\"userrun\",\"op\":\"exit\",\"iterations\":1,\"elapsed_ns\":%" PRIu64
           ",\"metrics\":{\"exit_status\":%d},\"units\":{\"exit_status\":\"status\"},"
           "\"checksum\":0,\"signal\":%d,\"file\":%s,\"truncated\":[",
           elapsed_ns, code, sig, has_file ? "true" : "false");
    const char *sep = "";
    if (out_cut) {
        printf("\"stdout\"");
        sep = ",";
    }
    if (file_cut) {
        printf("%s\"file\"", sep);
        sep = ",";
    }
    if (err_cut)
        printf("%s\"stderr\"", sep);
    fputs("]}\n", stdout);
    fflush(stdout);
}

/* --server: the child that runs ARGV (stdout and stderr into one pipe: its log). */
static void exec_server(char **cmd, const char *cd, int log_fd)
{
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    if (chdir(cd) != 0) {
        fprintf(stderr, "userrun: cannot change to %s: %s\n", cd, strerror(errno));
        _exit(127);
    }
    setenv("PATH", FIXED_ENV[0] + 5, 1);
    execvpe(cmd[0], cmd, FIXED_ENV);
    fprintf(stderr, "userrun: cannot run %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* True when something accepts a TCP connection on 127.0.0.1:port now. */
static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* --server: start ARGV, `ready` once it listens on port, forward SIGTERM/SIGINT to it
 * (SIGKILL after STOP_GRACE_S s), then its log's tail and the exit line. */
static int run_server(char **cmd, const char *cd, int port)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: poll returns at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int pe[2];
    if (pipe2(pe, O_CLOEXEC)) {
        probe_error("userrun", "run", "pipe: %s", strerror(errno));
        return 1;
    }
    uint64_t t0 = probe_now_ns(), t_stop = 0;
    pid_t pid = fork();
    if (pid < 0) {
        probe_error("userrun", "run", "fork: %s", strerror(errno));
        return 1;
    }
    if (pid == 0)
        exec_server(cmd, cd, pe[1]);
    close(pe[1]);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    int log_open = 1, status = 0, ready = 0, termed = 0, killed = 0;
    for (;;) {
        if (stop_requested && !termed) {
            kill(pid, SIGTERM);
            termed = 1;
            t_stop = probe_now_ns();
        }
        if (termed && !killed && probe_now_ns() - t_stop > STOP_GRACE_S * 1000000000ull) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        if (log_open) {
            struct pollfd fd = {pe[0], POLLIN, 0};
            poll(&fd, 1, POLL_MS);
            drain(pe[0], NULL, 1, &log_open);
        } else {
            usleep(POLL_MS * 1000);
        }
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        if (!ready && !stop_requested && port_open(port)) {
            probe_ready();
            ready = 1;
        }
    }
    uint64_t t_exit = probe_now_ns();
    if (log_open)
        drain(pe[0], NULL, 1, &log_open);
    emit_chunks("stderr", err_tail, err_len);
    print_exit(t_exit - t0, status, 0, 0, 0);
    if (ready)
        return 0;
    /* never listened: the harness saw no `ready`, so say why on stderr (its reason) */
    size_t end = err_len, start;
    while (end && (err_tail[end - 1] == '\n' || err_tail[end - 1] == ' '))
        end--;
    for (start = end; start && err_tail[start - 1] != '\n'; start--)
        ;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    fwrite(err_tail, 1, err_len, stderr);
    fprintf(stderr, "\nuserrun: %s exited with status %d before it listened on port %d%s%.*s\n",
            cmd[0], code, port, end > start ? ": " : "", (int)(end - start), err_tail + start);
    return 1;
}

int main(int argc, char **argv)
{
    int server = 0, port = 0;
    for (int k = 1; k < argc && strcmp(argv[k], "--") != 0; k++)
        server |= strcmp(argv[k], "--server") == 0;
    if (!server)
        probe_ready(); /* a server's `ready` waits until it listens */
    const char *cd = "/";
    int want_out = 0, i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--cd") == 0 && i + 1 < argc) {
            cd = argv[++i];
        } else if (strcmp(argv[i], "--out") == 0) {
            want_out = 1;
        } else if (strcmp(argv[i], "--server") == 0) {
            server = 1;
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            long p = strtol(argv[++i], &end, 10);
            if (*end || p < 1 || p > 65535) {
                fprintf(stderr, "userrun: --port must be 1-65535: %s\n", argv[i]);
                return 2;
            }
            port = (int)p;
        } else if (strcmp(argv[i], "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else {
            fprintf(stderr, "userrun: unexpected argument: %s\n%s", argv[i], USAGE);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "userrun: no command after --\n%s", USAGE);
        return 2;
    }
    char **cmd = argv + i;
    int ncmd = argc - i;
    if (server && (!port || want_out)) {
        fprintf(stderr, "userrun: --server needs --port P (and takes no --out)\n%s", USAGE);
        return 2;
    }
    if (server)
        return run_server(cmd, cd, port);
    char dir[] = "/tmp/isobench-userrun-XXXXXX", outpath[64] = "";
    if (want_out) {
        mkdir("/tmp", 01777); /* a tree without /tmp still gets one */
        if (!mkdtemp(dir)) {
            probe_error("userrun", "run", "cannot make a directory under /tmp: %s",
                        strerror(errno));
            return 1;
        }
        snprintf(outpath, sizeof outpath, "%s/out", dir);
        char **c = calloc((size_t)ncmd + 1, sizeof *c);
        if (!c)
            probe_die("userrun", "out of memory");
        for (int k = 0; k < ncmd; k++)
            c[k] = subst(cmd[k], outpath);
        cmd = c;
    }
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
        probe_error("userrun", "run", "pipe: %s", strerror(errno));
        return 1;
    }
    uint64_t t0 = probe_now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        probe_error("userrun", "run", "fork: %s", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        if (chdir(cd) != 0) {
            fprintf(stderr, "userrun: cannot change to %s: %s\n", cd, strerror(errno));
            _exit(127);
        }
        setenv("PATH", FIXED_ENV[0] + 5, 1); /* execvpe searches the caller's PATH */
        execvpe(cmd[0], cmd, FIXED_ENV);
        fprintf(stderr, "userrun: cannot run %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    buf_t out = {NULL, 0, 0, MAX_CAPTURE, 0}, file = {NULL, 0, 0, MAX_CAPTURE, 0};
    int out_open = 1, err_open = 1, status = 0, exited = 0;
    uint64_t t_exit = 0;
    while (!exited) {
        struct pollfd fds[2];
        int nf = 0;
        if (out_open)
            fds[nf++] = (struct pollfd){po[0], POLLIN, 0};
        if (err_open)
            fds[nf++] = (struct pollfd){pe[0], POLLIN, 0};
        if (nf)
            poll(fds, (nfds_t)nf, 100);
        else
            usleep(10000);
        if (out_open)
            drain(po[0], &out, 0, &out_open);
        if (err_open)
            drain(pe[0], NULL, 1, &err_open);
        pid_t w = waitpid(pid, &status, nf ? WNOHANG : 0);
        if (w == pid) {
            exited = 1;
            t_exit = probe_now_ns();
        }
    }
    /* what is still in the pipes; a grandchild that keeps them open is not waited for */
    if (out_open)
        drain(po[0], &out, 0, &out_open);
    if (err_open)
        drain(pe[0], NULL, 1, &err_open);
    if (want_out) {
        read_file(outpath, &file);
        remove_dir(dir);
    }
    emit_chunks("stdout", out.data, out.len);
    emit_chunks("file", file.data, file.len);
    emit_chunks("stderr", err_tail, err_len);
    print_exit(t_exit - t0, status, want_out && file.len, out.truncated, file.truncated);
    return 0;
}
