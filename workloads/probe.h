/*
 * probe.h - shared helpers for the isobench workload probes.
 *
 * Every probe is one C file that includes this header FIRST, and is built as
 *     gcc -O2 -static -Wall -Wextra -Iworkloads -o OUT SRC -lm
 * so the very same bytes run on the host, in containers and in guests.
 *
 * Output contract (see bench/probeio.py):
 *   - "ready" is printed first thing in main() (probe_ready()),
 *   - then one JSON object per measurement per line, flushed (probe_emit()),
 *   - an op that cannot be measured prints {"probe":..,"op":..,"error":".."}
 *     (probe_error()) and the probe continues with the next op,
 *   - diagnostics go to stderr, never stdout.
 * A result line is
 *   {"probe":..,"op":..,"iterations":N,"elapsed_ns":T,"metrics":{name:value,..},
 *    "units":{name:unit,..},"checksum":C}
 * optionally followed by
 *   "direct":true|false      io reads: the file was opened with O_DIRECT (false: the
 *                            filesystem refused it, a buffered read after
 *                            fadvise(DONTNEED) was measured instead)
 *   "page_cache":true|false  io reads: the data came at page-cache speed (a read of the
 *                            file between 0.5 and 1.5 times as fast as a warm buffered
 *                            read of it, measured in the same place): O_DIRECT was not
 *                            honoured, or there is no device behind the file (tmpfs);
 *                            the figure is then not the device's
 *   "note":"..."             a sentence for the reader; it contains the words
 *                            "page cache" exactly when "page_cache" is true.
 * Windowed ops (probe_window(): the cpu probe) report elapsed_ns = the window and
 * iterations = the work done in exactly that window (interpolated within the chunk
 * that crossed its end, rounded); their metrics come from the unrounded work; and
 *   "cpu_ns":C               the CPU time the process ran in that window (its share of
 *                            a CPU is C / elapsed_ns: a quota q reads q).
 * In serve mode (--serve, see probe_serve()) every line, result or error, ends with
 *   "burst":K                the number of the command line it answers (1, 2, ...)
 */
#ifndef ISOBENCH_PROBE_H
#define ISOBENCH_PROBE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROBE_MAX_OPS 64
#define PROBE_NS_PER_MS 1000000ULL
/* Checksums are masked to 53 bits so every JSON reader (JavaScript, pandas
 * float columns) represents them exactly. */
#define PROBE_CHECKSUM_MASK ((UINT64_C(1) << 53) - 1)
/* A calibration loop that would need more iterations than this is broken
 * (an op that takes no time): report an error rather than spin forever. */
#define PROBE_MAX_ITERS (1ULL << 48)

/* ---------------------------------------------------------------- clock */

static inline uint64_t probe_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t probe_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- output */

/* The CPU time the last window (probe_window()) ran, scaled to exactly its wall time,
 * printed as the "cpu_ns" member of the next line and then cleared; UINT64_MAX: none.
 * cpu_ns / elapsed_ns is the share of a CPU the window got: a quota q reads q there
 * whatever the machine's speed, where the rate mixes the share with the speed. */
static uint64_t probe_window_cpu_ns = UINT64_MAX;

static inline void probe_cpu_member(void)
{
    if (probe_window_cpu_ns != UINT64_MAX)
        printf(",\"cpu_ns\":%" PRIu64, probe_window_cpu_ns);
    probe_window_cpu_ns = UINT64_MAX;
}

/* Serve mode: the number of the command being answered (1, 2, ...), printed as the
 * "burst" member of its line; 0 outside serve mode (no member). */
static uint64_t probe_serve_seq;

static inline void probe_serve_member(void)
{
    if (probe_serve_seq)
        printf(",\"burst\":%" PRIu64, probe_serve_seq);
}

static inline void probe_ready(void)
{
    fputs("ready\n", stdout);
    fflush(stdout);
}

/* Print s as a JSON string (with quotes). */
static inline void probe_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* While set, probe_error() prints nothing: a serve-mode probe preparing its ops before
 * its first command (see probe_serve_calibrate()) tries a failed op again, and prints
 * its error, at that op's first burst; a line no command asked for would be read as the
 * answer to the next one. */
static int probe_quiet;

/* {"probe":..,"op":..,"error":"<printf-formatted reason>"} */
__attribute__((format(printf, 3, 4)))
static inline void probe_error(const char *probe, const char *op, const char *fmt, ...)
{
    if (probe_quiet)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fputs("{\"probe\":", stdout);
    probe_json_str(stdout, probe);
    fputs(",\"op\":", stdout);
    probe_json_str(stdout, op);
    fputs(",\"error\":", stdout);
    probe_json_str(stdout, msg);
    probe_serve_member();
    fputs("}\n", stdout);
    fflush(stdout);
    fprintf(stderr, "%s: %s: %s\n", probe, op, msg);
}

typedef struct {
    const char *name;  /* metric name, e.g. "ns_per_op" */
    double value;
    const char *unit;  /* e.g. "ns" */
} probe_metric;

/* Optional extra members of a result line. */
typedef struct {
    const char *note;  /* NULL: no "note" member */
    int direct;        /* -1: no "direct" member; 0/1: "direct":false/true */
    int page_cache;    /* -1: no "page_cache" member; 0/1: "page_cache":false/true */
} probe_extra;

#define PROBE_NO_EXTRA ((probe_extra){NULL, -1, -1})

/* One measurement line. Metrics that are not finite turn the line into an
 * error line: the contract never carries NaN or infinity. */
static inline void probe_emit(const char *probe, const char *op, uint64_t iterations,
                              uint64_t elapsed_ns, const probe_metric *m, int nm,
                              uint64_t checksum, probe_extra extra)
{
    if (nm < 1) {
        probe_error(probe, op, "internal error: no metric");
        return;
    }
    for (int i = 0; i < nm; i++) {
        if (!isfinite(m[i].value)) {
            probe_error(probe, op, "metric %s is not finite (elapsed_ns=%" PRIu64
                        ", iterations=%" PRIu64 ")", m[i].name, elapsed_ns, iterations);
            return;
        }
    }
    printf("{\"probe\":\"%s\",\"op\":\"%s\",\"iterations\":%" PRIu64 ",\"elapsed_ns\":%" PRIu64
           ",\"metrics\":{", probe, op, iterations, elapsed_ns);
    for (int i = 0; i < nm; i++)
        printf("%s\"%s\":%.3f", i ? "," : "", m[i].name, m[i].value);
    fputs("},\"units\":{", stdout);
    for (int i = 0; i < nm; i++)
        printf("%s\"%s\":\"%s\"", i ? "," : "", m[i].name, m[i].unit);
    printf("},\"checksum\":%" PRIu64, (uint64_t)(checksum & PROBE_CHECKSUM_MASK));
    if (extra.direct >= 0)
        printf(",\"direct\":%s", extra.direct ? "true" : "false");
    if (extra.page_cache >= 0)
        printf(",\"page_cache\":%s", extra.page_cache ? "true" : "false");
    if (extra.note) {
        fputs(",\"note\":", stdout);
        probe_json_str(stdout, extra.note);
    }
    probe_cpu_member();
    probe_serve_member();
    fputs("}\n", stdout);
    fflush(stdout);
}

/* Convenience: a line with a single metric. */
static inline void probe_emit1(const char *probe, const char *op, uint64_t iterations,
                               uint64_t elapsed_ns, const char *metric, double value,
                               const char *unit, uint64_t checksum, probe_extra extra)
{
    probe_metric m = {metric, value, unit};
    probe_emit(probe, op, iterations, elapsed_ns, &m, 1, checksum, extra);
}

/* ---------------------------------------------------------------- calibration */

/* Run the op n times; add anything that must not be optimised away to
 * *checksum. Return 0, or an errno value (optionally after filling
 * probe_errbuf with a better message). */
typedef int (*probe_fn)(void *ctx, uint64_t n, uint64_t *checksum);

static char probe_errbuf[256] __attribute__((unused));

static inline const char *probe_strerr(int rc)
{
    if (probe_errbuf[0])
        return probe_errbuf;
    return strerror(rc);
}

__attribute__((format(printf, 1, 2)))
static inline void probe_set_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(probe_errbuf, sizeof probe_errbuf, fmt, ap);
    va_end(ap);
}

/*
 * Calibrated measurement: starting from *n (>= 1), run the op n times and
 * time it; while the timed run lasted less than min_ns, double n and run
 * again. The run that reached min_ns is the reported one: *n, *elapsed and
 * *checksum describe it. Callers keep *n between repetitions, so later reps
 * start from the calibrated count (and double again if they fall short).
 * Returns 0 or an errno value (see probe_strerr()).
 */
static inline int probe_calibrate_ns(probe_fn fn, void *ctx, uint64_t min_ns, uint64_t *n,
                                     uint64_t *elapsed, uint64_t *checksum)
{
    if (*n < 1)
        *n = 1;
    probe_errbuf[0] = 0;
    for (;;) {
        uint64_t cks = 0;
        uint64_t t0 = probe_now_ns();
        int rc = fn(ctx, *n, &cks);
        uint64_t t1 = probe_now_ns();
        if (rc)
            return rc;
        if (t1 - t0 >= min_ns && t1 > t0) {
            *elapsed = t1 - t0;
            *checksum = cks;
            return 0;
        }
        if (*n >= PROBE_MAX_ITERS) {
            probe_set_err("calibration did not reach %" PRIu64 " ns after %" PRIu64
                          " iterations", min_ns, *n);
            return ERANGE;
        }
        *n *= 2;
    }
}

/* The same with min_ms: a measurement of at least min_ms milliseconds. */
static inline int probe_calibrate(probe_fn fn, void *ctx, uint64_t min_ms, uint64_t *n,
                                  uint64_t *elapsed, uint64_t *checksum)
{
    return probe_calibrate_ns(fn, ctx, min_ms * PROBE_NS_PER_MS, n, elapsed, checksum);
}

/* ---------------------------------------------------------------- windows */

/* Chunks last at least this long, and at least PROBE_CLOCK_SHARE clock reads:
 * reading the clock between chunks then costs at most 1/PROBE_CLOCK_SHARE of
 * the time (a real system call of ~30 us under gVisor, ~20 ns through a vDSO). */
#define PROBE_CHUNK_MIN_NS 1000000ULL
#define PROBE_CLOCK_SHARE 500

/* What one probe_now_ns() costs here, in ns (at least 1). */
static inline uint64_t probe_clock_cost_ns(void)
{
    enum { READS = 16 };
    uint64_t t0 = probe_now_ns(), t = t0;
    for (int i = 0; i < READS; i++)
        t = probe_now_ns();
    uint64_t per = (t - t0) / READS;
    return per ? per : 1;
}

/* The CFS bandwidth period every container runtime and Kubernetes use. */
#define PROBE_CFS_PERIOD_NS 100000000ULL

/*
 * Before probe_window(): calibrate *chunk (iterations of one chunk, lasting at
 * least floor_ns and PROBE_CLOCK_SHARE clock reads) and, the first time in this
 * process, keep running the op for one CFS period. A quota's first period is
 * irregular (a fresh cgroup starts with a full quota at any phase of its period
 * timer: a first window would hold one running stretch too many, up to a third
 * more work in 300 ms at q = 0.25); from the first period boundary on, every
 * period holds the same running time.
 * With ns_per_iter (may be NULL): the op's wall time per iteration, from that
 * period where it ran (a quota's pauses included), else from the calibration.
 * Returns 0 or an errno value (see probe_strerr()).
 */
static inline int probe_window_prepare_rate(probe_fn fn, void *ctx, uint64_t *chunk,
                                            uint64_t floor_ns, double *ns_per_iter)
{
    static int settled;
    uint64_t min_ns = PROBE_CLOCK_SHARE * probe_clock_cost_ns();
    uint64_t elapsed = 0, cks, ran = 0;
    if (min_ns < floor_ns)
        min_ns = floor_ns;
    uint64_t t0 = probe_now_ns();
    int rc = probe_calibrate_ns(fn, ctx, min_ns, chunk, &elapsed, &cks);
    uint64_t t1 = probe_now_ns();
    while (!rc && !settled && probe_now_ns() - t0 < PROBE_CFS_PERIOD_NS) {
        rc = fn(ctx, *chunk, &cks);
        ran += *chunk;
    }
    settled = 1;
    if (ns_per_iter && !rc)
        *ns_per_iter = ran ? (double)(probe_now_ns() - t1) / (double)ran
                           : (double)elapsed / (double)*chunk;
    return rc;
}

static inline int probe_window_prepare_floor(probe_fn fn, void *ctx, uint64_t *chunk,
                                             uint64_t floor_ns)
{
    return probe_window_prepare_rate(fn, ctx, chunk, floor_ns, NULL);
}

/* The same with chunks of at least PROBE_CHUNK_MIN_NS (windows of 10 ms and more). */
static inline int probe_window_prepare(probe_fn fn, void *ctx, uint64_t *chunk)
{
    return probe_window_prepare_floor(fn, ctx, chunk, PROBE_CHUNK_MIN_NS);
}

/*
 * Windowed measurement (after probe_window_prepare()): the work the op does in
 * window_ns of wall time. The op runs in chunks of `chunk` iterations with the
 * clock read between them; the chunk that crosses the window's end is
 * interpolated (the op runs at a steady rate within a chunk), so *work is the
 * work done in exactly window_ns.
 *
 * Why a window of wall time: a CPU quota (CFS bandwidth control: docker --cpus,
 * a Kubernetes CPU limit) lets a task run for q*P of every period P (100 ms),
 * then stops it until the next period. The probe reads the clock only while it
 * runs, so a window starts in a running stretch; a window of a whole number of
 * periods k*P then ends at the same phase of the schedule and holds exactly
 * k*q*P of running time, whatever that phase: its rate reads q exactly. A
 * window of a fixed amount of work does not: where it ends depends on where it
 * began, and the median of such windows is off by up to (1-q)*P / (2 * window).
 * Returns 0 or an errno value (see probe_strerr()).
 */
static inline int probe_window(probe_fn fn, void *ctx, uint64_t chunk, uint64_t window_ns,
                               double *work, uint64_t *checksum)
{
    uint64_t cks = 0, done = 0;
    uint64_t cpu0 = probe_cpu_ns();
    uint64_t start = probe_now_ns(), prev = start, end = start + window_ns;
    probe_errbuf[0] = 0;
    for (;;) {
        uint64_t c = 0;
        int rc = fn(ctx, chunk, &c);
        uint64_t t = probe_now_ns();
        if (rc)
            return rc;
        cks += c;
        if (t >= end) {
            double part = t > prev ? (double)(end - prev) / (double)(t - prev) : 1.0;
            *work = (double)done + (double)chunk * part;
            *checksum = cks;
            double cpu = (double)(probe_cpu_ns() - cpu0) * (double)window_ns / (double)(t - start);
            probe_window_cpu_ns = (uint64_t)cpu;
            return 0;
        }
        done += chunk;
        prev = t;
    }
}

/* ---------------------------------------------------------------- arguments */

/* Long option codes of the common options; probe-specific options use
 * codes >= 256. */
enum {
    PROBE_OPT_OP = 'O',
    PROBE_OPT_REPS = 'R',
    PROBE_OPT_MINMS = 'M',
    PROBE_OPT_HELP = 'h',
    PROBE_OPT_SERVE = 'S',
};

#define PROBE_COMMON_LONGOPTS                                      \
    {"op", required_argument, NULL, PROBE_OPT_OP},                 \
    {"reps", required_argument, NULL, PROBE_OPT_REPS},             \
    {"min-ms", required_argument, NULL, PROBE_OPT_MINMS},          \
    {"help", no_argument, NULL, PROBE_OPT_HELP}

/* Only in the probes that have a serve mode (probe_serve()). */
#define PROBE_SERVE_LONGOPT {"serve", no_argument, NULL, PROBE_OPT_SERVE}
#define PROBE_USAGE_SERVE                                                              \
    "  --serve        after `ready`, run one burst per command read on stdin:\n"         \
    "                 `OP ms=N` (a window of N ms), `OP iters=N` or `quit`\n"

#define PROBE_USAGE_OP_REPS                                                           \
    "  --op NAME      run only this op (repeatable, or comma-separated; default: all)\n" \
    "  --reps N       measurements per op, each printed as its own line (default 1)\n"
#define PROBE_USAGE_MIN_MS \
    "  --min-ms M     each calibrated measurement lasts at least M ms (default 10)\n"
#define PROBE_USAGE_HELP "  --help         print this help and exit\n"
#define PROBE_COMMON_USAGE PROBE_USAGE_OP_REPS PROBE_USAGE_MIN_MS PROBE_USAGE_HELP

typedef struct {
    const char *probe;
    const char *usage;          /* full usage text */
    const char *const *ops;     /* all ops, in default order */
    int nops;
    int sel[PROBE_MAX_OPS];     /* selected op indices, in run order */
    int nsel;
    uint64_t reps;
    uint64_t min_ms;
    int serve;                  /* --serve was given */
    const char *run_opt;        /* the last option that shapes a non-serve run, or NULL */
} probe_args;

static inline void probe_args_init(probe_args *a, const char *probe, const char *usage,
                                   const char *const *ops, int nops)
{
    memset(a, 0, sizeof *a);
    a->probe = probe;
    a->usage = usage;
    a->ops = ops;
    a->nops = nops;
    a->reps = 1;
    a->min_ms = 10;
}

__attribute__((noreturn, format(printf, 2, 3)))
static inline void probe_die_usage(const probe_args *a, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", a->probe);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

__attribute__((noreturn, format(printf, 2, 3)))
static inline void probe_die(const char *probe, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", probe);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* Strict unsigned integer parse; exits 2 on anything malformed. */
static inline uint64_t probe_parse_u64(const probe_args *a, const char *opt, const char *s,
                                       uint64_t lo, uint64_t hi)
{
    char *end = NULL;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+')
        probe_die_usage(a, "--%s needs an integer between %" PRIu64 " and %" PRIu64 ", got '%s'",
                        opt, lo, hi, s ? s : "");
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        probe_die_usage(a, "--%s needs an integer between %" PRIu64 " and %" PRIu64 ", got '%s'",
                        opt, lo, hi, s);
    return (uint64_t)v;
}

static inline void probe_add_ops(probe_args *a, const char *list)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    int any = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < a->nops; i++)
            if (strcmp(tok, a->ops[i]) == 0)
                found = i;
        if (found < 0) {
            fprintf(stderr, "%s: unknown op '%s' (ops:", a->probe, tok);
            for (int i = 0; i < a->nops; i++)
                fprintf(stderr, " %s", a->ops[i]);
            fputs(")\n", stderr);
            exit(2);
        }
        if (a->nsel >= PROBE_MAX_OPS)
            probe_die_usage(a, "too many --op");
        a->sel[a->nsel++] = found;
        any = 1;
    }
    if (!any)
        probe_die_usage(a, "--op needs an op name");
}

/*
 * Handle the common options and getopt_long's error returns (call
 * getopt_long with optstring ":" and opterr = 0). Returns 1 if
 * c was handled, 0 if the probe must handle it. Exits on --help (usage on
 * stdout, 0) and on unknown options (usage on stderr, 2).
 */
static inline int probe_common_opt(probe_args *a, int c, char **argv)
{
    switch (c) {
    case PROBE_OPT_OP:
        probe_add_ops(a, optarg);
        a->run_opt = "op";
        return 1;
    case PROBE_OPT_REPS:
        a->reps = probe_parse_u64(a, "reps", optarg, 1, 1000000);
        a->run_opt = "reps";
        return 1;
    case PROBE_OPT_MINMS:
        a->min_ms = probe_parse_u64(a, "min-ms", optarg, 0, 3600000);
        a->run_opt = "min-ms";
        return 1;
    case PROBE_OPT_SERVE:
        a->serve = 1;
        return 1;
    case PROBE_OPT_HELP:
        fputs(a->usage, stdout);
        fflush(stdout);
        exit(0);
    case ':': /* needs optstring ":" */
        fprintf(stderr, "%s: option needs an argument: %s\n", a->probe, argv[optind - 1]);
        exit(2);
    case '?':
        fprintf(stderr, "%s: unknown option: %s\n", a->probe, argv[optind - 1]);
        fputs(a->usage, stderr);
        exit(2);
    default:
        return 0;
    }
}

/* After option parsing: reject positional arguments (and options that shape a run
 * under --serve, whose ops and lengths come on stdin), default to all ops. */
static inline void probe_finish_args(probe_args *a, int argc, char **argv)
{
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument: %s\n", a->probe, argv[optind]);
        fputs(a->usage, stderr);
        exit(2);
    }
    if (a->serve && a->run_opt)
        probe_die_usage(a, "--serve takes its ops and burst lengths on stdin, not --%s",
                        a->run_opt);
    if (a->nsel == 0) {
        for (int i = 0; i < a->nops && i < PROBE_MAX_OPS; i++)
            a->sel[i] = i;
        a->nsel = a->nops;
    }
}

/* ---------------------------------------------------------------- serve mode */

/*
 * Serve mode (--serve): after `ready`, the probe reads one command per line on
 * stdin and answers every line but `quit` with exactly one line on stdout, flushed:
 *     OP ms=N      one burst of OP: a window of N ms of wall time (1 <= N <= 3600000),
 *                  as probe_window(): elapsed_ns = N ms, iterations = the work done in
 *                  it (metrics from the unrounded work)
 *     OP ms=N prime=M   the same window right after M ms of OP, untimed: under a CPU
 *                  quota a window reads the quota exactly only when the op has run
 *                  without a pause since a period boundary (probe_window()); a primer
 *                  sent as a command of its own left the round trip between the two
 *                  commands idle, and the quota unspent in it was the window's (1-7%
 *                  more work at cpus=0.25 and 0.5 through docker's attach stream)
 *     OP iters=N   one burst of exactly N iterations of OP (1 <= N <= 2^48):
 *                  elapsed_ns = the time they took
 *     quit         end, status 0, no answer (end of file on stdin does the same)
 * The answer is a result line or an error line, as outside serve mode, with one more
 * member "burst":K, K the number of the command line it answers (every line but
 * `quit` counts, bad ones too). A bad command (empty, unknown op, a length that is
 * missing or out of range, anything more, longer than PROBE_SERVE_MAX_LINE) gets an
 * error line whose op is the command's first word ("" if none), and the probe reads on.
 * Bursts are cheap to start: every op is set up, and its rate calibrated, once, after
 * `ready` and before the first command is read (probe_serve_calibrate(); one that fails
 * there, at its first burst), never again; the first calibration of the process also
 * runs one CFS period of its op (probe_window_prepare_rate()). A caller still sends each
 * op one untimed burst first (a warm-up, and the first answer waits for the
 * preparation). After it, a window's burst answers within max(window/16, one
 * iteration) of its end (probe_serve_window()), however long a clock read takes.
 */
#define PROBE_SERVE_MAX_LINE 256
#define PROBE_SERVE_MAX_MS 3600000ULL

typedef struct {
    int op;             /* index into the probe's ops */
    uint64_t window_ns; /* ms=N: N ms of wall time; 0 for iters=N */
    uint64_t iters;     /* iters=N: N; 0 for ms=N */
    uint64_t prime_ns;  /* prime=M after ms=N: M ms of the op, untimed, just before */
} probe_burst;

/* Runs one burst of b->op and prints exactly one line (probe_emit() or probe_error()). */
typedef void (*probe_burst_fn)(void *ctx, const probe_burst *b);

/* A whole decimal number in [lo, hi]; 0 if s is anything else. */
static inline int probe_serve_number(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end = NULL;
    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

/* One command line (without its newline) -> *b. Returns 1 for a burst, 0 for
 * `quit`, -1 after printing the error line of a bad command. */
static inline int probe_serve_parse(const probe_args *a, char *line, probe_burst *b)
{
    static const char *const SEP = " \t\r";
    char *save = NULL;
    char *op = strtok_r(line, SEP, &save);
    char *len = op ? strtok_r(NULL, SEP, &save) : NULL;
    char *more = len ? strtok_r(NULL, SEP, &save) : NULL;
    if (!op) {
        probe_error(a->probe, "", "empty command (commands: OP ms=N, OP iters=N, quit)");
        return -1;
    }
    if (strcmp(op, "quit") == 0 && !len)
        return 0;
    b->op = -1;
    for (int i = 0; i < a->nops; i++)
        if (strcmp(op, a->ops[i]) == 0)
            b->op = i;
    if (b->op < 0) {
        char list[256] = "";
        for (int i = 0; i < a->nops; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), " %s", a->ops[i]);
        probe_error(a->probe, op, "unknown op (ops:%s; or quit)", list);
        return -1;
    }
    b->window_ns = b->iters = 0;
    uint64_t v = 0;
    if (!len) {
        probe_error(a->probe, op, "needs a length: ms=N or iters=N");
        return -1;
    }
    if (strncmp(len, "ms=", 3) == 0) {
        if (!probe_serve_number(len + 3, 1, PROBE_SERVE_MAX_MS, &v)) {
            probe_error(a->probe, op, "ms needs a whole number between 1 and %llu, got '%s'",
                        PROBE_SERVE_MAX_MS, len + 3);
            return -1;
        }
        b->window_ns = v * PROBE_NS_PER_MS;
    } else if (strncmp(len, "iters=", 6) == 0) {
        if (!probe_serve_number(len + 6, 1, PROBE_MAX_ITERS, &v)) {
            probe_error(a->probe, op, "iters needs a whole number between 1 and %llu, got '%s'",
                        PROBE_MAX_ITERS, len + 6);
            return -1;
        }
        b->iters = v;
    } else {
        probe_error(a->probe, op, "needs a length: ms=N or iters=N, got '%s'", len);
        return -1;
    }
    b->prime_ns = 0;
    if (more && b->window_ns && strncmp(more, "prime=", 6) == 0) {
        if (!probe_serve_number(more + 6, 1, PROBE_SERVE_MAX_MS, &v)) {
            probe_error(a->probe, op, "prime needs a whole number between 1 and %llu, got '%s'",
                        PROBE_SERVE_MAX_MS, more + 6);
            return -1;
        }
        b->prime_ns = v * PROBE_NS_PER_MS;
        more = strtok_r(NULL, SEP, &save);
    }
    if (more) {
        probe_error(a->probe, op, "unexpected '%s' after the length", more);
        return -1;
    }
    return 1;
}

/* A held serving probe is stopped with SIGTERM (SIGINT, SIGHUP): status 0 at once.
 * As a namespace's or container's init it would ignore a signal without a handler. */
static void probe_serve_stop(int sig)
{
    (void)sig;
    _exit(0);
}

/* The serve loop: answer command lines until `quit`, end of file or SIGTERM. Returns
 * the probe's exit status: 0, or 1 if reading stdin failed. */
static inline int probe_serve(const probe_args *a, probe_burst_fn run, void *ctx)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_serve_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int status = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        probe_serve_seq++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = 0;
        if (len > PROBE_SERVE_MAX_LINE || strlen(line) != (size_t)len) {
            probe_error(a->probe, "", "command longer than %d bytes or with a NUL byte",
                        PROBE_SERVE_MAX_LINE);
            continue;
        }
        probe_burst b;
        int r = probe_serve_parse(a, line, &b);
        if (r == 0)
            break;
        if (r > 0)
            run(ctx, &b);
    }
    if (ferror(stdin)) {
        fprintf(stderr, "%s: reading commands: %s\n", a->probe, strerror(errno));
        status = 1;
    }
    free(line);
    return status;
}

/* The per-op state a serve-mode op keeps between its bursts. */
typedef struct {
    uint64_t chunk;      /* the first guess of the op's calibration, in iterations (set by
                            the probe), then its calibrated count */
    int calibrated;      /* rate calibrated (at the op's first ms= burst) */
    double ns_per_iter;  /* the op's wall time per iteration: calibrated, then its last
                            window's (clock reads and a quota's pauses included) */
    uint64_t share_ns;   /* PROBE_CLOCK_SHARE clock reads: the shortest chunk worth one */
} probe_serve_op;

/* A window's last chunks last at most window / PROBE_SERVE_SLICES (its overrun). */
#define PROBE_SERVE_SLICES 16

/*
 * A window of serve mode: probe_window()'s figure (the work done in exactly window_ns,
 * the chunk that crosses the end interpolated, "cpu_ns" likewise), with chunks sized
 * for the window as well as for the clock. A chunk lasts PROBE_CLOCK_SHARE clock reads
 * (share_ns: the clock then costs at most 1/PROBE_CLOCK_SHARE of the window) where that
 * is at most window / PROBE_SERVE_SLICES: ~10 us on the host, so a window ends within
 * ~10 us of its end, as probe_window()'s. Under gVisor a clock read can be a system call
 * of 40-120 us (in some sandboxes; ~30 ns in others), share_ns 20-60 ms: a window of 5 ms
 * then ended only with its first chunk, 18-63 ms late. There a chunk aims at half the
 * time left (a chunk of an op that runs twice as slow as expected still ends within the
 * window), and no less than window / PROBE_SERVE_SLICES: the window ends within
 * max(window/16, one iteration) of its end after log2(PROBE_SERVE_SLICES) + 2 or so
 * clock reads (chunks of window/16 throughout would take 16: 13-38% of a 5 ms window).
 * A chunk's iterations come from the slowest of three rates: the op's last window's,
 * this window's so far, its last chunk's.
 * Returns 0 or an errno value (see probe_strerr()).
 */
static inline int probe_serve_window(probe_fn fn, void *ctx, probe_serve_op *s,
                                     uint64_t window_ns, double *work, uint64_t *checksum)
{
    uint64_t tail_ns = window_ns / PROBE_SERVE_SLICES, cks = 0, done = 0;
    double per = s->ns_per_iter > 0 ? s->ns_per_iter : 1.0;
    uint64_t cpu0 = probe_cpu_ns();
    uint64_t start = probe_now_ns(), prev = start, end = start + window_ns;
    probe_errbuf[0] = 0;
    for (;;) {
        double aim = (double)(end - prev) / 2;
        if (aim < (double)tail_ns)
            aim = (double)tail_ns;
        if (aim > (double)s->share_ns)
            aim = (double)s->share_ns;
        double want = aim / per;
        uint64_t n = want < 1 ? 1 : want > (double)PROBE_MAX_ITERS ? PROBE_MAX_ITERS
                                                                    : (uint64_t)want;
        uint64_t c = 0;
        int rc = fn(ctx, n, &c);
        uint64_t t = probe_now_ns();
        if (rc)
            return rc;
        cks += c;
        if (t >= end) {
            double part = t > prev ? (double)(end - prev) / (double)(t - prev) : 1.0;
            *work = (double)done + (double)n * part;
            *checksum = cks;
            double cpu = (double)(probe_cpu_ns() - cpu0) * (double)window_ns / (double)(t - start);
            probe_window_cpu_ns = (uint64_t)cpu;
            s->ns_per_iter = (double)(t - start) / (double)(done + n);
            return 0;
        }
        double last = (double)(t - prev) / (double)n;
        done += n;
        prev = t;
        double avg = (double)(t - start) / (double)done;
        per = s->ns_per_iter;
        if (per < avg)
            per = avg;
        if (per < last)
            per = last;
    }
}

/*
 * Calibrates the op's rate, once (the first calibration of the process also settles a
 * CPU quota's period: probe_window_prepare_rate()). A serve-mode probe prepares every op
 * so before it reads its first command, quietly (probe_quiet): the instances of a held
 * set then set up and calibrate at once, while the harness starts the others, not one
 * after another at their first bursts (~0.4 s each for cpu's buffers). An op that fails
 * there is tried again at its first burst, which prints the error.
 * Returns 0 or an errno value (see probe_strerr()).
 */
static inline int probe_serve_calibrate(probe_fn fn, void *ctx, probe_serve_op *s)
{
    if (s->calibrated)
        return 0;
    int rc = probe_window_prepare_rate(fn, ctx, &s->chunk, 0, &s->ns_per_iter);
    if (rc)
        return rc;
    s->share_ns = PROBE_CLOCK_SHARE * probe_clock_cost_ns();
    s->calibrated = 1;
    return 0;
}

/*
 * One burst of op fn (probe_burst): *work = the iterations done (unrounded for a
 * window), *elapsed = the window or the measured time of iters=N. An op's rate is
 * calibrated at its first window only (the first calibration of the process also
 * settles a CPU quota's period: probe_window_prepare_rate()); every window then runs
 * as probe_serve_window() and keeps its rate for the next.
 * Returns 0 or an errno value (see probe_strerr()).
 */
static inline int probe_serve_burst(probe_fn fn, void *ctx, probe_serve_op *s,
                                    const probe_burst *b, double *work, uint64_t *elapsed,
                                    uint64_t *checksum)
{
    probe_errbuf[0] = 0;
    if (b->iters) {
        uint64_t cks = 0;
        uint64_t t0 = probe_now_ns();
        int rc = fn(ctx, b->iters, &cks);
        uint64_t t1 = probe_now_ns();
        *work = (double)b->iters;
        *elapsed = t1 - t0;
        *checksum = cks;
        return rc;
    }
    int rc = probe_serve_calibrate(fn, ctx, s);
    if (rc)
        return rc;
    if (b->prime_ns) {
        double w = 0;
        uint64_t c = 0;
        int rc = probe_serve_window(fn, ctx, s, b->prime_ns, &w, &c);
        if (rc)
            return rc;
        probe_window_cpu_ns = UINT64_MAX;
    }
    *elapsed = b->window_ns;
    return probe_serve_window(fn, ctx, s, b->window_ns, work, checksum);
}

#endif /* ISOBENCH_PROBE_H */
