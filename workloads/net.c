/*
 * net probe: the network path between the host and an environment, TCP over IPv4.
 *
 * Two modes, the same bytes: the server runs inside the environment (a held instance),
 * the client on the host, outside every environment.
 *
 *   net --server --port P [--idle-s S]
 *       listens on 0.0.0.0:P, prints `ready` once listening, then serves one connection
 *       at a time until SIGTERM/SIGINT/SIGHUP (exit 0) or --max-s. When it ends it prints
 *       one line, op "server": the connections it served and its own CPU time.
 *   net --client HOST:PORT [--op OPS] [--reps N] [--min-ms M] [--timeout-s T]
 *       prints `ready` first, then one JSON line per measurement (probe.h's contract).
 *
 * Wire protocol: the first byte of every connection names its mode.
 *   'e'  echo (tcp_rr): the server answers 'e', then echoes every byte it reads, except
 *        'U', which it answers with its usage line (below) on the same connection.
 *   'c'  connect/request/response/close (tcp_crr): the server answers 'c' and closes
 *        first (the TIME_WAIT is the server's, so the client's ports do not run out).
 *   's'  sink (tcp_stream_c2s): the server reads to EOF, then answers the byte count
 *        (8 bytes, little endian) and closes: the client's clock stops when the last byte
 *        was received, not when it was queued.
 *   'o'  source (tcp_stream_s2c): the server writes until the client closes.
 *   'u'  usage: the server answers "U <user_us> <sys_us> <connections>\n" (its
 *        getrusage) and closes. The client asks before and after each measurement
 *        window: the server's own CPU time per transaction / per MB.
 *
 * Ops (default order) and figures:
 *   tcp_rr          1-byte request/response on one connection: p50_us, p99_us (of every
 *                   round trip in the window), trans_per_s
 *   tcp_crr         connect + 1-byte request/response + close: conn_per_s
 *   tcp_stream_c2s  bulk client -> server: mb_per_s (1 MB = 1e6 bytes)
 *   tcp_stream_s2c  bulk server -> client: mb_per_s
 * plus client_cpu_us_per_trans / server_cpu_us_per_trans (rr, crr: per transaction or
 * connection) and client_cpu_ms_per_mb / server_cpu_ms_per_mb (streams): getrusage
 * (user + system) of each side over the window. Each measurement is a window of at
 * least --min-ms of wall time (default 1000: ten CFS periods, so a CPU quota reads as
 * its rate), after a short warm-up on the same connection.
 *
 * A peer that vanishes mid-test: every client socket has send/receive timeouts of
 * --timeout-s (default 10 s): the op fails with a reason ("no reply within 10 s",
 * "connection reset by peer") and the probe goes on with the next op. The server's
 * connections time out after --idle-s (default 30 s) of silence; the server goes on
 * accepting.
 */
#include "probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define PROBE "net"
#define STREAM_BUF (128 * 1024)
#define WARMUP_NS (50 * PROBE_NS_PER_MS)

static const char *const OPS[] = {"tcp_rr", "tcp_crr", "tcp_stream_c2s", "tcp_stream_s2c"};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static const char USAGE[] =
    "usage: net --server --port P [--idle-s S] [--max-s N]\n"
    "       net --client HOST:PORT [options]\n"
    "TCP over IPv4 between a server (inside an environment) and a client (on the host).\n"
    "Client: prints `ready`, then one JSON line per measurement.\n"
    "ops: tcp_rr tcp_crr tcp_stream_c2s tcp_stream_s2c\n"
    "options:\n" PROBE_USAGE_OP_REPS
    "  --min-ms M     each measurement window lasts at least M ms (default 1000)\n"
    "  --timeout-s T  client: a reply that takes longer fails the op (default 10)\n"
    "  --idle-s S     server: a connection silent this long is dropped (default 30)\n"
    "  --max-s N      server: exit (0) on its own after N s (default 3600)\n" PROBE_USAGE_HELP;

enum { OPT_SERVER = 256, OPT_CLIENT, OPT_PORT, OPT_TIMEOUT, OPT_IDLE, OPT_MAXS };

static char errbuf[256];

static void set_timeouts(int fd, unsigned seconds)
{
    struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* The reason of a failed send/recv/connect, for the error line. */
static int io_fail(const char *what, int e, unsigned timeout_s)
{
    if (e == EAGAIN || e == EWOULDBLOCK || e == EINPROGRESS)
        snprintf(errbuf, sizeof errbuf, "%s: no answer within %u s (peer gone?)", what,
                 timeout_s);
    else if (e == 0)
        snprintf(errbuf, sizeof errbuf, "%s: connection closed by the peer", what);
    else
        snprintf(errbuf, sizeof errbuf, "%s: %s", what, strerror(e));
    return -1;
}

/* How long a read or write may wait (ms): the client's --timeout-s, the server's
 * --idle-s. Besides SO_RCVTIMEO/SO_SNDTIMEO, for sockets that come back non-blocking
 * whatever was asked (gVisor's hostinet): EAGAIN then waits in poll() this long. */
static int io_timeout_ms = 10000;

/* After EAGAIN: wait until fd is ready for `events`; 0, or -1 with errno EAGAIN (the
 * timeout passed) or poll's error. */
static int wait_io(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    int pr;
    while ((pr = poll(&p, 1, io_timeout_ms)) < 0 && errno == EINTR) {
    }
    if (pr == 0)
        errno = EAGAIN;
    return pr > 0 ? 0 : -1;
}

/* read() that waits through EAGAIN (at most io_timeout_ms each time). */
static ssize_t read_wait(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return r;
        if (wait_io(fd, POLLIN) != 0)
            return -1;
    }
}

/* Read exactly n bytes; 0 on success, -1 with errno (0: EOF). */
static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read_wait(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = 0;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_io(fd, POLLOUT) == 0)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static uint64_t cpu_us_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
           (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
}

/* ================================================================ server */

static volatile sig_atomic_t stop_server;

static void on_signal(int sig)
{
    (void)sig;
    stop_server = 1;
}

/* "U <user_us> <sys_us> <connections>\n": the server's own CPU time so far. */
static int send_usage(int fd, uint64_t connections)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char line[128];
    int n = snprintf(line, sizeof line, "U %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                     (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec,
                     (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec,
                     connections);
    return write_full(fd, line, (size_t)n);
}

static void serve(int fd, char mode, uint64_t connections)
{
    static char buf[STREAM_BUF];
    char b = mode;
    switch (mode) {
    case 'e':
        if (write_full(fd, &b, 1) != 0)
            return;
        while (!stop_server) {
            ssize_t r = read_wait(fd, &b, 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return;
            if (b == 'U' ? send_usage(fd, connections) != 0 : write_full(fd, &b, 1) != 0)
                return;
        }
        return;
    case 'c':
        write_full(fd, &b, 1);
        return;
    case 's': {
        uint64_t total = 0;
        while (!stop_server) {
            ssize_t r = read_wait(fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return;
            if (r == 0)
                break;
            total += (uint64_t)r;
        }
        unsigned char le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (unsigned char)(total >> (8 * i));
        write_full(fd, le, sizeof le);
        return;
    }
    case 'o':
        memset(buf, 'o', sizeof buf);
        while (!stop_server && write_full(fd, buf, sizeof buf) == 0) {
        }
        return;
    case 'u':
        send_usage(fd, connections);
        return;
    default:
        fprintf(stderr, "net: server: unknown mode byte 0x%02x\n", (unsigned char)mode);
    }
}

static int run_server(unsigned port, unsigned idle_s, unsigned max_s)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read/accept returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGALRM);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        probe_die(PROBE, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0)
        probe_die(PROBE, "bind 0.0.0.0:%u: %s", port, strerror(errno));
    if (listen(lfd, 128) != 0)
        probe_die(PROBE, "listen: %s", strerror(errno));
    probe_ready();
    alarm(max_s);

    uint64_t t0 = probe_now_ns(), connections = 0;
    while (!stop_server) {
        /* wait for a connection with the stop signals blocked outside ppoll: a SIGTERM
         * between the check and the wait is not lost */
        sigprocmask(SIG_BLOCK, &block, &orig);
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int pr = stop_server ? 0 : ppoll(&p, 1, NULL, &orig);
        sigprocmask(SIG_SETMASK, &orig, NULL);
        if (pr <= 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        /* blocking, whatever the listener's flags were (gVisor's hostinet) */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        nodelay(fd);
        set_timeouts(fd, idle_s);
        char mode;
        if (read_full(fd, &mode, 1) == 0)
            serve(fd, mode, connections);
        close(fd);
        connections++;
    }
    close(lfd);
    uint64_t elapsed = probe_now_ns() - t0;
    probe_metric m[] = {{"cpu_ms", (double)cpu_us_self() / 1000.0, "ms"},
                        {"connections", (double)connections, "count"}};
    probe_emit(PROBE, "server", connections, elapsed, m, 2, connections, PROBE_NO_EXTRA);
    return 0;
}

/* ================================================================ client */

struct client {
    struct sockaddr_in addr;
    unsigned timeout_s;
    uint64_t window_ns;
};

/* A connected socket with the timeouts set and the mode byte sent; -1 (errbuf). */
static int dial(const struct client *c, char mode)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return io_fail("socket", errno, c->timeout_s);
    set_timeouts(fd, c->timeout_s); /* SO_SNDTIMEO bounds connect() too */
    nodelay(fd);
    while (connect(fd, (const struct sockaddr *)&c->addr, sizeof c->addr) != 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return io_fail("connect", e, c->timeout_s);
    }
    if (write_full(fd, &mode, 1) != 0) {
        int e = errno;
        close(fd);
        return io_fail("send", e, c->timeout_s);
    }
    return fd;
}

/* Read the server's usage line from fd (after 'u' or an in-band 'U'): CPU time in us. */
static int read_usage(const struct client *c, int fd, uint64_t *us)
{
    char line[128];
    size_t got = 0;
    while (got < sizeof line - 1) {
        ssize_t r = read_wait(fd, line + got, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return io_fail("usage request", r == 0 ? 0 : errno, c->timeout_s);
        if (line[got++] == '\n')
            break;
    }
    line[got] = 0;
    unsigned long long user, sys, conns;
    if (sscanf(line, "U %llu %llu %llu", &user, &sys, &conns) != 3) {
        snprintf(errbuf, sizeof errbuf, "usage request: unexpected answer '%.40s'", line);
        return -1;
    }
    *us = user + sys;
    return 0;
}

/* The server's CPU time so far (us): asks it over a 'u' connection (the server serves
 * one connection at a time: only between the op's own connections). */
static int server_cpu_us(const struct client *c, uint64_t *us)
{
    int fd = dial(c, 'u');
    if (fd < 0)
        return -1;
    int rc = read_usage(c, fd, us);
    close(fd);
    return rc;
}

/* The same in-band, on an echo connection. */
static int server_cpu_us_inband(const struct client *c, int fd, uint64_t *us)
{
    char u = 'U';
    if (write_full(fd, &u, 1) != 0)
        return io_fail("send", errno, c->timeout_s);
    return read_usage(c, fd, us);
}

/* What one window measured. */
struct window {
    uint64_t count;      /* transactions, connections or bytes */
    uint64_t elapsed_ns;
    uint64_t client_us, server_us;
    double p50_us, p99_us;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of sorted v (nearest rank). */
static double quantile(const uint64_t *v, uint64_t n, double q)
{
    uint64_t k = (uint64_t)ceil(q * (double)n);
    return (double)v[k ? k - 1 : 0];
}

static int rr_round_trip(int fd, char *b, const struct client *c)
{
    if (write_full(fd, b, 1) != 0)
        return io_fail("send", errno, c->timeout_s);
    if (read_full(fd, b, 1) != 0)
        return io_fail("receive", errno, c->timeout_s);
    return 0;
}

static int op_rr(const struct client *c, struct window *w)
{
    int fd = dial(c, 'e');
    if (fd < 0)
        return -1;
    char b;
    int rc = -1;
    uint64_t cap = 1 << 16, n = 0, *lat = malloc(cap * sizeof *lat);
    if (!lat) {
        close(fd);
        snprintf(errbuf, sizeof errbuf, "out of memory");
        return -1;
    }
    if (read_full(fd, &b, 1) != 0) { /* the server's 'e': it speaks this protocol */
        io_fail("handshake", errno, c->timeout_s);
        goto out;
    }
    for (uint64_t t0 = probe_now_ns(); probe_now_ns() - t0 < WARMUP_NS;)
        if (rr_round_trip(fd, &b, c) != 0)
            goto out;
    if (server_cpu_us_inband(c, fd, &w->server_us) != 0)
        goto out;
    w->client_us = cpu_us_self();
    uint64_t start = probe_now_ns(), t = start;
    while (t - start < c->window_ns) {
        if (n == cap) {
            uint64_t *more = realloc(lat, 2 * cap * sizeof *lat);
            if (!more) {
                snprintf(errbuf, sizeof errbuf, "out of memory");
                goto out;
            }
            lat = more;
            cap *= 2;
        }
        uint64_t t1;
        b = 'r';
        if (rr_round_trip(fd, &b, c) != 0)
            goto out;
        t1 = probe_now_ns();
        lat[n++] = t1 - t;
        t = t1;
    }
    w->elapsed_ns = t - start;
    w->client_us = cpu_us_self() - w->client_us;
    uint64_t s1;
    if (server_cpu_us_inband(c, fd, &s1) != 0)
        goto out;
    w->server_us = s1 - w->server_us;
    w->count = n;
    qsort(lat, n, sizeof *lat, cmp_u64);
    w->p50_us = quantile(lat, n, 0.50) / 1000.0;
    w->p99_us = quantile(lat, n, 0.99) / 1000.0;
    rc = 0;
out:
    free(lat);
    close(fd);
    return rc;
}

static int crr_one(const struct client *c)
{
    int fd = dial(c, 'c');
    if (fd < 0)
        return -1;
    char b[2];
    int rc = 0;
    if (read_full(fd, b, 1) != 0)
        rc = io_fail("receive", errno, c->timeout_s);
    else {
        ssize_t r = read_wait(fd, b, 1); /* the server closes first: EOF */
        if (r != 0)
            rc = io_fail("waiting for the server's close", r < 0 ? errno : EPROTO, c->timeout_s);
    }
    close(fd);
    return rc;
}

static int op_crr(const struct client *c, struct window *w)
{
    for (uint64_t t0 = probe_now_ns(); probe_now_ns() - t0 < WARMUP_NS;)
        if (crr_one(c) != 0)
            return -1;
    if (server_cpu_us(c, &w->server_us) != 0)
        return -1;
    w->client_us = cpu_us_self();
    uint64_t n = 0, start = probe_now_ns(), t = start;
    while (t - start < c->window_ns) {
        if (crr_one(c) != 0)
            return -1;
        n++;
        t = probe_now_ns();
    }
    w->elapsed_ns = t - start;
    w->client_us = cpu_us_self() - w->client_us;
    uint64_t s1;
    if (server_cpu_us(c, &s1) != 0)
        return -1;
    w->server_us = s1 - w->server_us;
    w->count = n;
    return 0;
}

static int op_c2s(const struct client *c, struct window *w)
{
    static char buf[STREAM_BUF];
    memset(buf, 's', sizeof buf);
    if (server_cpu_us(c, &w->server_us) != 0)
        return -1;
    int fd = dial(c, 's');
    if (fd < 0)
        return -1;
    int rc = -1;
    w->client_us = cpu_us_self();
    uint64_t sent = 0, start = probe_now_ns();
    while (probe_now_ns() - start < c->window_ns) {
        if (write_full(fd, buf, sizeof buf) != 0) {
            io_fail("send", errno, c->timeout_s);
            goto out;
        }
        sent += sizeof buf;
    }
    shutdown(fd, SHUT_WR);
    unsigned char le[8];
    if (read_full(fd, le, sizeof le) != 0) {
        io_fail("waiting for the server's byte count", errno, c->timeout_s);
        goto out;
    }
    w->elapsed_ns = probe_now_ns() - start; /* the last byte arrived */
    w->client_us = cpu_us_self() - w->client_us;
    uint64_t got = 0;
    for (int i = 0; i < 8; i++)
        got |= (uint64_t)le[i] << (8 * i);
    if (got != sent) {
        snprintf(errbuf, sizeof errbuf, "the server received %" PRIu64 " of %" PRIu64 " bytes",
                 got, sent);
        goto out;
    }
    w->count = got;
    rc = 0;
out:
    close(fd);
    if (rc == 0) {
        uint64_t s1;
        if (server_cpu_us(c, &s1) != 0)
            return -1;
        w->server_us = s1 - w->server_us;
    }
    return rc;
}

static int op_s2c(const struct client *c, struct window *w)
{
    static char buf[STREAM_BUF];
    if (server_cpu_us(c, &w->server_us) != 0)
        return -1;
    int fd = dial(c, 'o');
    if (fd < 0)
        return -1;
    int rc = -1;
    uint64_t got = 0;
    /* the first byte starts the clock: the connection is up and the server writing */
    if (read_full(fd, buf, 1) != 0) {
        io_fail("receive", errno, c->timeout_s);
        goto out;
    }
    w->client_us = cpu_us_self();
    uint64_t start = probe_now_ns(), t = start;
    while (t - start < c->window_ns) {
        ssize_t r = read_wait(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            io_fail("receive", r == 0 ? 0 : errno, c->timeout_s);
            goto out;
        }
        got += (uint64_t)r;
        t = probe_now_ns();
    }
    w->elapsed_ns = t - start;
    w->client_us = cpu_us_self() - w->client_us;
    w->count = got;
    rc = 0;
out:
    close(fd); /* the server's next write fails: it goes back to accept() */
    if (rc == 0) {
        uint64_t s1;
        if (server_cpu_us(c, &s1) != 0)
            return -1;
        w->server_us = s1 - w->server_us;
    }
    return rc;
}

static void emit(const char *op, const struct window *w)
{
    double s = (double)w->elapsed_ns / 1e9;
    double n = (double)w->count;
    if (strcmp(op, "tcp_rr") == 0 || strcmp(op, "tcp_crr") == 0) {
        int rr = strcmp(op, "tcp_rr") == 0;
        probe_metric m[5];
        int k = 0;
        if (rr) {
            m[k++] = (probe_metric){"p50_us", w->p50_us, "us"};
            m[k++] = (probe_metric){"p99_us", w->p99_us, "us"};
            m[k++] = (probe_metric){"trans_per_s", n / s, "1/s"};
        } else {
            m[k++] = (probe_metric){"conn_per_s", n / s, "1/s"};
        }
        m[k++] = (probe_metric){"client_cpu_us_per_trans", (double)w->client_us / n, "us"};
        m[k++] = (probe_metric){"server_cpu_us_per_trans", (double)w->server_us / n, "us"};
        probe_emit(PROBE, op, w->count, w->elapsed_ns, m, k, w->count, PROBE_NO_EXTRA);
    } else {
        double mb = n / 1e6;
        probe_metric m[] = {{"mb_per_s", mb / s, "MB/s"},
                            {"client_cpu_ms_per_mb", (double)w->client_us / 1000.0 / mb, "ms"},
                            {"server_cpu_ms_per_mb", (double)w->server_us / 1000.0 / mb, "ms"}};
        probe_emit(PROBE, op, w->count, w->elapsed_ns, m, 3, w->count, PROBE_NO_EXTRA);
    }
}

static int parse_hostport(const char *s, struct sockaddr_in *addr)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    char *end = NULL;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || !*(colon + 1) || *end || port == 0 || port > 65535)
        return -1;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &addr->sin_addr) == 1 ? 0 : -1;
}

static int run_client(probe_args *a, const char *target, unsigned timeout_s)
{
    struct client c = {.timeout_s = timeout_s, .window_ns = a->min_ms * PROBE_NS_PER_MS};
    if (parse_hostport(target, &c.addr) != 0)
        probe_die_usage(a, "--client needs IPV4:PORT, got '%s'", target);
    signal(SIGPIPE, SIG_IGN);
    static int (*const run[NOPS])(const struct client *, struct window *) = {
        op_rr, op_crr, op_c2s, op_s2c};
    for (int k = 0; k < a->nsel; k++) {
        int i = a->sel[k];
        for (uint64_t r = 0; r < a->reps; r++) {
            struct window w;
            memset(&w, 0, sizeof w);
            errbuf[0] = 0;
            if (run[i](&c, &w) != 0) {
                probe_error(PROBE, OPS[i], "%s: %s", target, errbuf[0] ? errbuf : "failed");
                break;
            }
            if (w.count == 0 || w.elapsed_ns == 0) {
                probe_error(PROBE, OPS[i], "nothing was transferred in the window");
                break;
            }
            emit(OPS[i], &w);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int server = 0;
    const char *client = NULL;
    unsigned port = 0, timeout_s = 10, idle_s = 30, max_s = 3600;
    probe_args a;
    probe_args_init(&a, PROBE, USAGE, OPS, NOPS);
    a.min_ms = 1000;
    static const struct option longopts[] = {
        PROBE_COMMON_LONGOPTS,
        {"server", no_argument, NULL, OPT_SERVER},
        {"client", required_argument, NULL, OPT_CLIENT},
        {"port", required_argument, NULL, OPT_PORT},
        {"timeout-s", required_argument, NULL, OPT_TIMEOUT},
        {"idle-s", required_argument, NULL, OPT_IDLE},
        {"max-s", required_argument, NULL, OPT_MAXS},
        {NULL, 0, NULL, 0}};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (probe_common_opt(&a, ch, argv))
            continue;
        switch (ch) {
        case OPT_SERVER: server = 1; break;
        case OPT_CLIENT: client = optarg; break;
        case OPT_PORT: port = (unsigned)probe_parse_u64(&a, "port", optarg, 1, 65535); break;
        case OPT_TIMEOUT: timeout_s = (unsigned)probe_parse_u64(&a, "timeout-s", optarg, 1, 3600); break;
        case OPT_IDLE: idle_s = (unsigned)probe_parse_u64(&a, "idle-s", optarg, 1, 86400); break;
        case OPT_MAXS: max_s = (unsigned)probe_parse_u64(&a, "max-s", optarg, 1, 86400); break;
        default: probe_die_usage(&a, "unhandled option");
        }
    }
    probe_finish_args(&a, argc, argv);
    if (server == !!client)
        probe_die_usage(&a, "give exactly one of --server or --client HOST:PORT");
    if (server) {
        if (!port)
            probe_die_usage(&a, "--server needs --port P");
        io_timeout_ms = (int)(idle_s * 1000);
        return run_server(port, idle_s, max_s);
    }
    if (a.min_ms == 0)
        probe_die_usage(&a, "--min-ms must be at least 1 for the net probe");
    io_timeout_ms = (int)(timeout_s * 1000);
    probe_ready();
    return run_client(&a, client, timeout_s);
}
