/*
 * cpu probe: a fixed deterministic compute kernel, memory bandwidth (STREAM
 * triad) and memory latency (random cyclic pointer chase).
 *
 * Ops (default order): compute mem_bw mem_lat.
 *   compute  ops_per_s    kernel iterations per second
 *   mem_bw   mb_per_s     triad a[i]=b[i]+s*c[i] swept over the arrays in blocks of
 *                         BW_BLOCK elements, 24 bytes counted per element
 *                         (1 MB = 1e6 bytes); iterations = blocks
 *   mem_lat  ns_per_load  dependent loads through a Sattolo cycle of 64-byte
 *                         nodes; iterations = loads
 * Every measurement is a window of --window-ms of wall time (probe_window()):
 * the default, 300 ms, is three 100 ms CFS periods, so a CPU quota q reads as a
 * rate of exactly q (a 10 ms calibrated measurement would mostly fall inside
 * one running stretch and hide the throttling).
 * With --serve, one burst of an op per command read on stdin (probe_serve() in
 * probe.h); mem_bw's and mem_lat's buffers are built, and every op calibrated,
 * before the first command is read (probe_serve_calibrate()), and kept to the end.
 */
#include "probe.h"

#include <sys/mman.h>

#define PROBE "cpu"
#define MIB (1024ULL * 1024ULL)
#define LINE 64

static const char *const OPS[] = {"compute", "mem_bw", "mem_lat"};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static const char USAGE[] =
    "usage: cpu [options]\n"
    "CPU and memory probe; prints `ready`, then one JSON line per measurement.\n"
    "ops: compute (ops_per_s), mem_bw (mb_per_s), mem_lat (ns_per_load)\n"
    "options:\n" PROBE_USAGE_OP_REPS
    "  --window-ms W  each measurement is a window of W ms of wall time (default 300;\n"
    "                 a whole number of 100 ms CFS periods reads a CPU quota exactly);\n"
    "                 --min-ms W is the same option under the other probes' name\n"
    "  --mem-mib N    mem_bw: total size of the three arrays in MiB (default 256)\n"
    "  --lat-mib N    mem_lat: pointer-chase buffer in MiB (default 128)\n" PROBE_USAGE_SERVE
    PROBE_USAGE_HELP;

enum { OPT_MEM_MIB = 256, OPT_LAT_MIB, OPT_WINDOW_MS };
#define BW_BLOCK 65536 /* mem_bw: elements per block (512 KiB of each array) */

/* Measure `op` in reps windows of window_ns, starting with chunks of *chunk
 * iterations; each window's work goes to emit(work, window_ns, checksum). */
typedef void (*emit_fn)(void *ctx, double work, uint64_t window_ns, uint64_t checksum);

static void run_windows(const probe_args *a, const char *op, probe_fn fn, void *ctx,
                        uint64_t chunk, uint64_t window_ns, emit_fn emit)
{
    int rc = probe_window_prepare(fn, ctx, &chunk);
    for (uint64_t r = 0; !rc && r < a->reps; r++) {
        double work = 0;
        uint64_t cks = 0;
        rc = probe_window(fn, ctx, chunk, window_ns, &work, &cks);
        if (!rc)
            emit(ctx, work, window_ns, cks);
    }
    if (rc)
        probe_error(PROBE, op, "%s", probe_strerr(rc));
}

/* ---------------------------------------------------------------- compute */

/* IEEE-754 square root as one instruction, without libm's errno path (the
 * probe must link with or without -lm); correctly rounded on every IEEE FPU. */
static inline double exact_sqrt(double v)
{
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE2_MATH__))
    double r;
    __asm__("sqrtsd %1, %0" : "=x"(r) : "x"(v));
    return r;
#elif defined(__aarch64__)
    double r;
    __asm__("fsqrt %d0, %d1" : "=w"(r) : "w"(v));
    return r;
#else
    return sqrt(v); /* needs -lm, which the isobench builder passes */
#endif
}

/*
 * One iteration: a xorshift64 step, an LCG step, two FP multiply-adds and a
 * square root whose result is folded back into the integer accumulator.
 * The FP state stays bounded (f converges below ~6.6e5), all operations are
 * IEEE-exact on SSE2/any IEEE-754 FPU and the binary is the same everywhere,
 * so the checksum depends only on the iteration count.
 */
__attribute__((noinline))
static int op_compute(void *ctx, uint64_t n, uint64_t *cks)
{
    (void)ctx;
    uint64_t x = 0x9E3779B97F4A7C15ULL, l = 1, acc = 0;
    double f = 1.0, g = 0.5;
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        l = l * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t m = x ^ (l >> 29);
        f = f * 0.9999 + (double)(m & 0xFFFF) * 0.001;
        g = g * 0.5 + f * 0.25;
        double r = exact_sqrt(g + 1.0);
        acc += m + (uint64_t)(r * 1024.0);
    }
    *cks = acc;
    return 0;
}

static void emit_compute(void *ctx, double work, uint64_t window_ns, uint64_t cks)
{
    (void)ctx;
    probe_emit1(PROBE, "compute", (uint64_t)llround(work), window_ns, "ops_per_s",
                work / (double)window_ns * 1e9, "ops/s", cks, PROBE_NO_EXTRA);
}

/* ---------------------------------------------------------------- mem_bw */

struct bw {
    double *a, *b, *c;
    size_t n;       /* elements per array */
    size_t bytes;   /* mapping size per array */
    size_t pos;     /* next element of the sweep, kept between chunks */
};

__attribute__((noinline))
static void triad(double *restrict a, const double *restrict b, const double *restrict c,
                  size_t n, double s)
{
    for (size_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}

/* n blocks of the sweep through the arrays, wrapping at their end. */
static int op_mem_bw(void *vctx, uint64_t n, uint64_t *cks)
{
    struct bw *w = vctx;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = w->n - w->pos < BW_BLOCK ? w->n - w->pos : BW_BLOCK;
        triad(w->a + w->pos, w->b + w->pos, w->c + w->pos, len, 3.0);
        w->pos = w->pos + len == w->n ? 0 : w->pos + len;
    }
    double v = w->a[0] + w->a[w->n / 2] + w->a[w->n - 1];
    *cks = (uint64_t)v;
    return 0;
}

static void emit_mem_bw(void *ctx, double work, uint64_t window_ns, uint64_t cks)
{
    (void)ctx;
    double bytes = 3.0 * sizeof(double) * BW_BLOCK * work;
    probe_emit1(PROBE, "mem_bw", (uint64_t)llround(work), window_ns, "mb_per_s",
                bytes / (double)window_ns * 1e3, "MB/s", cks, PROBE_NO_EXTRA);
}

static void *map_buf(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void bw_free(struct bw *w)
{
    if (w->a) munmap(w->a, w->bytes);
    if (w->b) munmap(w->b, w->bytes);
    if (w->c) munmap(w->c, w->bytes);
}

/* Map and warm the arrays; 0, or -1 after printing the error line (nothing kept). */
static int bw_setup(struct bw *w, uint64_t mem_mib)
{
    memset(w, 0, sizeof *w);
    /* A whole number of blocks: every block counted carries BW_BLOCK elements. */
    w->n = (size_t)(mem_mib * MIB / 3 / sizeof(double)) / BW_BLOCK * BW_BLOCK;
    w->bytes = w->n * sizeof(double);
    if (w->n < 2 * BW_BLOCK) {
        probe_error(PROBE, "mem_bw", "--mem-mib %" PRIu64 " is too small", mem_mib);
        return -1;
    }
    w->a = map_buf(w->bytes);
    w->b = map_buf(w->bytes);
    w->c = map_buf(w->bytes);
    if (!w->a || !w->b || !w->c) {
        probe_error(PROBE, "mem_bw", "cannot allocate 3 x %zu bytes: %s", w->bytes,
                    strerror(errno));
        bw_free(w);
        return -1;
    }
    /* Touch every page (untimed) so the timed passes see no page faults. */
    for (size_t i = 0; i < w->n; i++) {
        w->a[i] = 0.0;
        w->b[i] = (double)(i & 1023);
        w->c[i] = 2.0;
    }
    /* One untimed warm-up pass (lazy host-side backing in sandboxes/guests). */
    triad(w->a, w->b, w->c, w->n, 3.0);
    return 0;
}

static void run_mem_bw(const probe_args *a, uint64_t mem_mib, uint64_t window_ns)
{
    struct bw w;
    if (bw_setup(&w, mem_mib) != 0)
        return;
    run_windows(a, "mem_bw", op_mem_bw, &w, 1, window_ns, emit_mem_bw);
    bw_free(&w);
}

/* ---------------------------------------------------------------- mem_lat */

struct lat {
    char *buf;
    size_t bytes;
    void **cur;     /* chase position, kept between calibration runs */
};

static int op_mem_lat(void *vctx, uint64_t n, uint64_t *cks)
{
    struct lat *l = vctx;
    void **p = l->cur;
    for (uint64_t i = 0; i < n; i++)
        p = (void **)*p;
    l->cur = p;
    *cks = (uint64_t)(((char *)p - l->buf) / LINE);
    return 0;
}

static void emit_mem_lat(void *ctx, double work, uint64_t window_ns, uint64_t cks)
{
    (void)ctx;
    probe_emit1(PROBE, "mem_lat", (uint64_t)llround(work), window_ns, "ns_per_load",
                (double)window_ns / work, "ns", cks, PROBE_NO_EXTRA);
}

static inline uint64_t xorshift64star(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Map the buffer and build its cycle; 0, or -1 after printing the error line. */
static int lat_setup(struct lat *lp, uint64_t lat_mib)
{
    struct lat l;
    l.bytes = (size_t)(lat_mib * MIB);
    size_t nodes = l.bytes / LINE;
    if (nodes < 2) {
        probe_error(PROBE, "mem_lat", "--lat-mib %" PRIu64 " is too small", lat_mib);
        return -1;
    }
    l.buf = map_buf(l.bytes);
    if (!l.buf) {
        probe_error(PROBE, "mem_lat", "cannot allocate %zu bytes: %s", l.bytes, strerror(errno));
        return -1;
    }
    /* Sattolo's algorithm on the node indices, stored in place: the result
     * is a single cycle through every node, in a fixed-seed random order. */
    for (size_t i = 0; i < nodes; i++)
        *(uintptr_t *)(l.buf + i * LINE) = i;
    uint64_t seed = 0x1234567887654321ULL;
    for (size_t i = nodes - 1; i > 0; i--) {
        size_t j = (size_t)(xorshift64star(&seed) % i);
        uintptr_t *pi = (uintptr_t *)(l.buf + i * LINE);
        uintptr_t *pj = (uintptr_t *)(l.buf + j * LINE);
        uintptr_t t = *pi;
        *pi = *pj;
        *pj = t;
    }
    for (size_t i = 0; i < nodes; i++) {
        uintptr_t *pi = (uintptr_t *)(l.buf + i * LINE);
        *pi = (uintptr_t)(l.buf + *pi * LINE);
    }
    l.cur = (void **)l.buf;
    *lp = l;
    return 0;
}

static void run_mem_lat(const probe_args *a, uint64_t lat_mib, uint64_t window_ns)
{
    struct lat l;
    if (lat_setup(&l, lat_mib) != 0)
        return;
    run_windows(a, "mem_lat", op_mem_lat, &l, 1024, window_ns, emit_mem_lat);
    munmap(l.buf, l.bytes);
}

/* ---------------------------------------------------------------- serve mode */

struct serve {
    uint64_t mem_mib, lat_mib;
    probe_serve_op op[NOPS];
    int ready[NOPS];  /* the op's buffers are built (compute needs none) */
    struct bw w;
    struct lat l;
};

static const probe_fn FNS[NOPS] = {op_compute, op_mem_bw, op_mem_lat};

/* The op's buffers built and its rate calibrated (once): 0, or -1 after printing the
 * error line (probe_serve_calibrate()). */
static int serve_prepare(struct serve *s, int op, void *ctx)
{
    if (!s->ready[op]) {
        if ((op == 1 && bw_setup(&s->w, s->mem_mib) != 0) ||
            (op == 2 && lat_setup(&s->l, s->lat_mib) != 0))
            return -1;
        s->ready[op] = 1;
    }
    int rc = probe_serve_calibrate(FNS[op], ctx, &s->op[op]);
    if (rc)
        probe_error(PROBE, OPS[op], "%s", probe_strerr(rc));
    return rc ? -1 : 0;
}

static void serve_burst(void *vs, const probe_burst *b)
{
    struct serve *s = vs;
    static const emit_fn EMITS[NOPS] = {emit_compute, emit_mem_bw, emit_mem_lat};
    void *ctxs[NOPS] = {NULL, &s->w, &s->l};
    if (serve_prepare(s, b->op, ctxs[b->op]) != 0)
        return;
    double work = 0;
    uint64_t elapsed = 0, cks = 0;
    int rc = probe_serve_burst(FNS[b->op], ctxs[b->op], &s->op[b->op], b, &work, &elapsed, &cks);
    if (rc)
        probe_error(PROBE, OPS[b->op], "%s", probe_strerr(rc));
    else
        EMITS[b->op](ctxs[b->op], work, elapsed, cks);
}

static int serve(const probe_args *a, uint64_t mem_mib, uint64_t lat_mib)
{
    static struct serve s; /* zeroed */
    s.mem_mib = mem_mib;
    s.lat_mib = lat_mib;
    /* First chunk guesses, as the non-serve runs: compute 1024, mem_bw 1, mem_lat 1024. */
    s.op[0].chunk = 1024;
    s.op[1].chunk = 1;
    s.op[2].chunk = 1024;
    void *ctxs[NOPS] = {NULL, &s.w, &s.l};
    probe_quiet = 1;
    for (int op = 0; op < NOPS; op++)
        serve_prepare(&s, op, ctxs[op]);
    probe_quiet = 0;
    int status = probe_serve(a, serve_burst, &s);
    if (s.ready[1])
        bw_free(&s.w);
    if (s.ready[2])
        munmap(s.l.buf, s.l.bytes);
    return status;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    probe_ready();

    probe_args a;
    probe_args_init(&a, PROBE, USAGE, OPS, NOPS);
    uint64_t mem_mib = 256, lat_mib = 128, window_ms = 300;
    static const struct option longopts[] = {
        PROBE_COMMON_LONGOPTS,
        {"mem-mib", required_argument, NULL, OPT_MEM_MIB},
        {"lat-mib", required_argument, NULL, OPT_LAT_MIB},
        {"window-ms", required_argument, NULL, OPT_WINDOW_MS},
        PROBE_SERVE_LONGOPT,
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (ch == OPT_WINDOW_MS || ch == PROBE_OPT_MINMS) {
            a.run_opt = ch == OPT_WINDOW_MS ? "window-ms" : "min-ms";
            window_ms = probe_parse_u64(&a, a.run_opt, optarg, 1, 3600000);
            continue;
        }
        if (probe_common_opt(&a, ch, argv))
            continue;
        switch (ch) {
        case OPT_MEM_MIB: mem_mib = probe_parse_u64(&a, "mem-mib", optarg, 1, 1 << 20); break;
        case OPT_LAT_MIB: lat_mib = probe_parse_u64(&a, "lat-mib", optarg, 1, 1 << 20); break;
        default: probe_die_usage(&a, "unhandled option");
        }
    }
    probe_finish_args(&a, argc, argv);
    if (a.serve)
        return serve(&a, mem_mib, lat_mib);

    uint64_t window_ns = window_ms * PROBE_NS_PER_MS;
    for (int k = 0; k < a.nsel; k++) {
        switch (a.sel[k]) {
        case 0: run_windows(&a, "compute", op_compute, NULL, 1024, window_ns, emit_compute); break;
        case 1: run_mem_bw(&a, mem_mib, window_ns); break;
        case 2: run_mem_lat(&a, lat_mib, window_ns); break;
        }
    }
    return 0;
}
