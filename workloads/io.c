/*
 * io probe: storage path costs in a target directory.
 *
 * Ops (default order):
 *   seq_write      write --file-mib MiB in 1 MiB blocks, then fsync (counted); mb_per_s
 *   seq_read       O_DIRECT read of that file in 1 MiB aligned blocks; mb_per_s
 *   rand_read_4k   O_DIRECT random 4 KiB aligned reads (fixed seed), calibrated; iops
 *   fsync_lat      --fsync-n times: 4 KiB pwrite + fdatasync; p50_us, p99_us
 *   create_unlink  create+close+unlink of a small file, calibrated; ops_per_s
 * Where O_DIRECT is refused (EINVAL: tmpfs, some overlayfs), reads fall back to
 * buffered I/O after posix_fadvise(DONTNEED) and the line says so ("direct":false
 * and a "note").
 * Where the flag is accepted but not honoured (gVisor serves O_DIRECT reads from
 * its own cache) the read is as fast as a warm buffered read: before the first
 * read op, a read of the file as the ops open it is compared with a warm buffered
 * read (median 1 MiB block times); between PAGE_CACHE_LOW and PAGE_CACHE_HIGH of
 * that speed, the read lines carry "page_cache":true and a note that says "page
 * cache" (probe.h). A file on tmpfs or ramfs (fstatfs) is always page cache: no device.
 * A device read of 1 MiB blocks at queue depth 1 runs at a fraction of it
 * (here: 1.3-1.5 GB/s against 5.5 GB/s; gVisor: 6.4 against 6.7 GB/s).
 *
 * Every file is named isobench-io-<pid>-* in --dir and is removed before exit,
 * also on SIGINT/SIGTERM/SIGHUP/SIGPIPE (exit 128+signal).
 */
#include "probe.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>

#define PROBE "io"
#define MIB (1024ULL * 1024ULL)
#define BLK (1024 * 1024)
#define PAGE 4096
#define FSYNC_FILE_BLOCKS 256 /* fsync_lat file: 256 x 4 KiB = 1 MiB */

static const char NOTE_NODIRECT[] =
    "O_DIRECT refused by this filesystem (EINVAL); buffered read after fadvise DONTNEED";
/* A read this close to a warm buffered read's speed (as a share of it) came from the
 * page cache. Faster is no page-cache read either: in an emulated guest (QEMU TCG)
 * the guest's own copy from its page cache is slower than a device read, which the
 * emulator does natively (1175 MB/s O_DIRECT against 402 MB/s warm buffered). */
#define PAGE_CACHE_LOW 0.5
#define PAGE_CACHE_HIGH 1.5
/* Memory filesystems have no device behind a file at all, whatever a read's speed: since
 * Linux 6.6 tmpfs accepts O_DIRECT and its direct reads ran at 0.36-0.49 of a warm
 * buffered read on a 6.18 VM, where a virtio disk's O_DIRECT read ran at 0.24: speed
 * alone does not tell them apart there. */
#define TMPFS_MAGIC_ 0x01021994
#define RAMFS_MAGIC_ 0x858458f6

static const char *const OPS[] = {"seq_write", "seq_read", "rand_read_4k", "fsync_lat",
                                  "create_unlink"};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))
enum { OP_SEQ_WRITE, OP_SEQ_READ, OP_RAND_READ, OP_FSYNC_LAT, OP_CREATE_UNLINK };

static const char USAGE[] =
    "usage: io --dir PATH [options]\n"
    "Storage probe; prints `ready`, then one JSON line per measurement.\n"
    "ops: seq_write seq_read (mb_per_s), rand_read_4k (iops), fsync_lat (p50_us, p99_us),\n"
    "     create_unlink (ops_per_s)\n"
    "options:\n" PROBE_COMMON_USAGE
    "  --dir PATH     target directory (required); files isobench-io-<pid>-* are made\n"
    "                 there and removed before exit\n"
    "  --file-mib N   size of the sequential/random-read file in MiB (default 64)\n"
    "  --fsync-n N    fsync_lat iterations (default 200; --min-ms does not apply)\n";

enum { OPT_DIR = 256, OPT_FILE_MIB, OPT_FSYNC_N };

/* ---------------------------------------------------------------- cleanup */

static int g_dirfd = -1;
static char g_prefix[64];
static size_t g_prefix_len;

/* Remove every isobench-io-<pid>-* entry of the target directory. Only
 * async-signal-safe calls (raw getdents64, unlinkat), so the signal handlers
 * use it too. */
static void cleanup_files(void)
{
    if (g_dirfd < 0)
        return;
    /* Unlinking while listing can make getdents skip entries: rescan until a
     * pass removes nothing. */
    for (int pass = 0; pass < 8; pass++) {
        int removed = 0;
        if (lseek(g_dirfd, 0, SEEK_SET) < 0)
            return;
        for (;;) {
            char buf[8192] __attribute__((aligned(8)));
            long nread = syscall(SYS_getdents64, g_dirfd, buf, sizeof buf);
            if (nread <= 0)
                break;
            for (long off = 0; off < nread;) {
                /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name[] */
                unsigned short reclen;
                memcpy(&reclen, buf + off + 16, sizeof reclen);
                const char *name = buf + off + 19;
                if (strncmp(name, g_prefix, g_prefix_len) == 0 && unlinkat(g_dirfd, name, 0) == 0)
                    removed++;
                off += reclen;
            }
        }
        if (!removed)
            return;
    }
}

static void on_signal(int sig)
{
    cleanup_files();
    _exit(128 + sig);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void fatal(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", PROBE);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cleanup_files();
    exit(1);
}

/* ---------------------------------------------------------------- helpers */

struct io {
    const char *dir;
    char data[96];          /* relative names inside g_dirfd */
    char fsyncf[96];
    uint64_t file_bytes;
    int have_data;          /* data file exists with file_bytes bytes */
    unsigned char *buf;     /* 1 MiB, page aligned */
    uint64_t fsync_n;
    /* rand_read_4k state */
    int rfd;
    uint64_t rng;
    uint64_t nblocks4k;
    /* create_unlink state */
    uint64_t cu_seq;
    /* page-cache check (check_page_cache()) */
    int pc_checked;
    int page_cache;         /* -1 unknown, 0/1 */
    char pc_note[320];
};

static inline uint64_t xorshift64star(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len) {
        ssize_t w = write(fd, c, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        c += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Open the data file for reading with O_DIRECT; on EINVAL fall back to a
 * buffered descriptor with the page cache dropped. *direct tells which. */
static int open_read(struct io *io, int *direct)
{
    int fd = openat(g_dirfd, io->data, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd >= 0) {
        *direct = 1;
        return fd;
    }
    if (errno != EINVAL)
        return -1;
    fd = openat(g_dirfd, io->data, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    *direct = 0;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return fd;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* Time one 1 MiB pread at off: ns, or 0 when it failed. */
static uint64_t time_block(struct io *io, int fd, uint64_t off)
{
    for (;;) {
        uint64_t t0 = probe_now_ns();
        ssize_t got = pread(fd, io->buf, BLK, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        return got == BLK ? probe_now_ns() - t0 : 0;
    }
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Is a read of the data file, opened as the read ops open it, served at page-cache
 * speed? After one pass that warms a buffered descriptor, each 1 MiB block is read
 * through both descriptors in turn, PC_PASSES times: the read's speed as a share of
 * the warm buffered read's is the median of the per-block time ratios, so a burst
 * of noise slows both reads of a block, not one side's whole pass (two separate
 * passes scattered the share of one and the same gVisor read over 0.7-1.6).
 * Records the verdict and a note for direct_extra(). */
#define PC_PASSES 3
static int memory_fs(void)
{
    struct statfs st;
    if (fstatfs(g_dirfd, &st) != 0)
        return 0;
    return st.f_type == TMPFS_MAGIC_ || st.f_type == RAMFS_MAGIC_;
}

static void check_page_cache(struct io *io)
{
    if (io->pc_checked)
        return;
    io->pc_checked = 1;
    io->page_cache = -1;
    int direct = 0;
    int fd = open_read(io, &direct);
    if (fd < 0)
        return;
    int bfd = openat(g_dirfd, io->data, O_RDONLY | O_CLOEXEC);
    uint64_t nblk = io->file_bytes / BLK, n = 0;
    double *share = malloc(nblk * PC_PASSES * sizeof *share);
    double *tread = malloc(nblk * PC_PASSES * sizeof *tread);
    double *tbuf = malloc(nblk * PC_PASSES * sizeof *tbuf);
    int ok = bfd >= 0 && share && tread && tbuf && nblk > 0;
    for (uint64_t off = 0; ok && off < io->file_bytes; off += BLK)
        ok = time_block(io, bfd, off) > 0; /* warm */
    for (int p = 0; ok && p < PC_PASSES; p++) {
        for (uint64_t off = 0; ok && off < io->file_bytes; off += BLK, n++) {
            if (!direct) /* as open_read() does: a cache fadvise drops is no page cache */
                posix_fadvise(fd, (off_t)off, BLK, POSIX_FADV_DONTNEED);
            uint64_t r = time_block(io, fd, off), b = time_block(io, bfd, off);
            ok = r > 0 && b > 0;
            share[n] = (double)b / (double)r;
            tread[n] = (double)r;
            tbuf[n] = (double)b;
        }
    }
    close(fd);
    if (bfd >= 0)
        close(bfd);
    if (ok) {
        qsort(share, n, sizeof *share, cmp_double);
        qsort(tread, n, sizeof *tread, cmp_double);
        qsort(tbuf, n, sizeof *tbuf, cmp_double);
        double s = share[n / 2], read = BLK / tread[n / 2] * 1e3, cached = BLK / tbuf[n / 2] * 1e3;
        int memory = memory_fs();
        io->page_cache = memory || (s >= PAGE_CACHE_LOW && s <= PAGE_CACHE_HIGH);
        if (memory)
            snprintf(io->pc_note, sizeof io->pc_note,
                     "the file is on a memory filesystem (tmpfs or ramfs): the read was "
                     "served from the page cache (%.0f MB/s%s, %.0f MB/s warm buffered), "
                     "not a device",
                     read, direct ? " with O_DIRECT" : "", cached);
        else if (io->page_cache && direct)
            snprintf(io->pc_note, sizeof io->pc_note,
                     "O_DIRECT did not bypass the page cache: the read ran at page-cache "
                     "speed (%.0f MB/s with O_DIRECT, %.0f MB/s warm buffered), so it was "
                     "served from the page cache (a filesystem that ignores O_DIRECT, or "
                     "tmpfs), not a device",
                     read, cached);
        else if (io->page_cache)
            snprintf(io->pc_note, sizeof io->pc_note,
                     "%s, which ran at page-cache speed (%.0f MB/s, %.0f MB/s warm "
                     "buffered): served from the page cache (tmpfs, or a cache fadvise does "
                     "not drop), not a device",
                     NOTE_NODIRECT, read, cached);
    }
    free(share);
    free(tread);
    free(tbuf);
}

static probe_extra direct_extra(const struct io *io, int direct)
{
    const char *note = io->page_cache == 1 ? io->pc_note : direct ? NULL : NOTE_NODIRECT;
    probe_extra e = {note, direct, io->page_cache};
    return e;
}

/* ---------------------------------------------------------------- ops */

/* Write the data file; returns 0 or errno. *elapsed covers write + fsync. */
static int do_seq_write(struct io *io, uint64_t *elapsed)
{
    int fd = openat(g_dirfd, io->data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    io->have_data = 0;
    uint64_t blocks = io->file_bytes / BLK;
    uint64_t t0 = probe_now_ns();
    for (uint64_t b = 0; b < blocks; b++) {
        memcpy(io->buf, &b, sizeof b); /* each block differs */
        int rc = write_all(fd, io->buf, BLK);
        if (rc) {
            close(fd);
            return rc;
        }
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    *elapsed = probe_now_ns() - t0;
    close(fd);
    io->have_data = 1;
    return 0;
}

static void run_seq_write(const probe_args *a, struct io *io)
{
    for (uint64_t r = 0; r < a->reps; r++) {
        uint64_t elapsed = 0;
        int rc = do_seq_write(io, &elapsed);
        if (rc) {
            probe_error(PROBE, "seq_write", "writing %s/%s: %s", io->dir, io->data, strerror(rc));
            return;
        }
        probe_emit1(PROBE, "seq_write", io->file_bytes / BLK, elapsed, "mb_per_s",
                    (double)io->file_bytes / (double)elapsed * 1e3, "MB/s", 0, PROBE_NO_EXTRA);
    }
}

static int ensure_data(struct io *io, const char *op)
{
    if (io->have_data)
        return 0;
    uint64_t ignored;
    int rc = do_seq_write(io, &ignored);
    if (rc)
        probe_error(PROBE, op, "creating the %" PRIu64 " MiB data file in %s: %s",
                    (uint64_t)(io->file_bytes / MIB), io->dir, strerror(rc));
    return rc;
}

static void run_seq_read(const probe_args *a, struct io *io)
{
    if (ensure_data(io, "seq_read"))
        return;
    check_page_cache(io);
    for (uint64_t r = 0; r < a->reps; r++) {
        int direct = 0;
        int fd = open_read(io, &direct);
        if (fd < 0) {
            probe_error(PROBE, "seq_read", "open %s/%s: %s", io->dir, io->data, strerror(errno));
            return;
        }
        uint64_t total = 0, cks = 0, blocks = 0;
        int err = 0;
        uint64_t t0 = probe_now_ns();
        for (;;) {
            ssize_t got = read(fd, io->buf, BLK);
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                err = errno;
                break;
            }
            if (got == 0)
                break;
            uint64_t first;
            memcpy(&first, io->buf, sizeof first);
            cks += first;
            total += (uint64_t)got;
            blocks++;
        }
        uint64_t elapsed = probe_now_ns() - t0;
        close(fd);
        if (err) {
            probe_error(PROBE, "seq_read", "read (%s): %s", direct ? "O_DIRECT" : "buffered",
                        strerror(err));
            return;
        }
        if (total != io->file_bytes) {
            probe_error(PROBE, "seq_read", "short file: read %" PRIu64 " of %" PRIu64 " bytes",
                        total, io->file_bytes);
            return;
        }
        probe_emit1(PROBE, "seq_read", blocks, elapsed, "mb_per_s",
                    (double)total / (double)elapsed * 1e3, "MB/s", cks, direct_extra(io, direct));
    }
}

static int op_rand_read(void *vio, uint64_t n, uint64_t *cks)
{
    struct io *io = vio;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) {
        off_t off = (off_t)((xorshift64star(&io->rng) % io->nblocks4k) * PAGE);
        ssize_t got = pread(io->rfd, io->buf, PAGE, off);
        if (got != PAGE) {
            if (got >= 0) {
                probe_set_err("short read at offset %lld", (long long)off);
                return EIO;
            }
            if (errno == EINTR)
                continue;
            return errno;
        }
        s += io->buf[8];
    }
    *cks = s;
    return 0;
}

static void run_rand_read(const probe_args *a, struct io *io)
{
    if (ensure_data(io, "rand_read_4k"))
        return;
    check_page_cache(io);
    int direct = 0;
    io->rfd = open_read(io, &direct);
    if (io->rfd < 0) {
        probe_error(PROBE, "rand_read_4k", "open %s/%s: %s", io->dir, io->data, strerror(errno));
        return;
    }
    io->nblocks4k = io->file_bytes / PAGE;
    io->rng = 0x5DEECE66DULL;
    uint64_t n = 64;
    for (uint64_t r = 0; r < a->reps; r++) {
        uint64_t elapsed = 0, cks = 0;
        if (!direct)
            posix_fadvise(io->rfd, 0, 0, POSIX_FADV_DONTNEED);
        int rc = probe_calibrate(op_rand_read, io, a->min_ms, &n, &elapsed, &cks);
        if (rc) {
            probe_error(PROBE, "rand_read_4k", "pread (%s): %s", direct ? "O_DIRECT" : "buffered",
                        probe_strerr(rc));
            break;
        }
        probe_emit1(PROBE, "rand_read_4k", n, elapsed, "iops", (double)n / (double)elapsed * 1e9,
                    "IOPS", cks, direct_extra(io, direct));
    }
    close(io->rfd);
    io->rfd = -1;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t percentile(const uint64_t *v, uint64_t n, uint64_t p)
{
    uint64_t rank = (p * n + 99) / 100; /* ceil(p/100 * n) */
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static void run_fsync_lat(const probe_args *a, struct io *io)
{
    uint64_t *lat = malloc(io->fsync_n * sizeof *lat);
    if (!lat) {
        probe_error(PROBE, "fsync_lat", "out of memory");
        return;
    }
    int fd = openat(g_dirfd, io->fsyncf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        probe_error(PROBE, "fsync_lat", "create %s/%s: %s", io->dir, io->fsyncf, strerror(errno));
        free(lat);
        return;
    }
    /* Preallocate 1 MiB (untimed) so the timed writes overwrite allocated blocks:
     * fdatasync then flushes data, not a growing size. */
    int rc = write_all(fd, io->buf, FSYNC_FILE_BLOCKS * PAGE);
    if (!rc && fsync(fd) != 0)
        rc = errno;
    if (rc) {
        probe_error(PROBE, "fsync_lat", "preparing %s/%s: %s", io->dir, io->fsyncf, strerror(rc));
        goto out;
    }
    for (uint64_t r = 0; r < a->reps; r++) {
        uint64_t t0 = probe_now_ns();
        for (uint64_t i = 0; i < io->fsync_n; i++) {
            memcpy(io->buf, &i, sizeof i);
            uint64_t s = probe_now_ns();
            ssize_t w = pwrite(fd, io->buf, PAGE, (off_t)((i % FSYNC_FILE_BLOCKS) * PAGE));
            if (w != PAGE) {
                rc = w < 0 ? errno : EIO;
                break;
            }
            if (fdatasync(fd) != 0) {
                rc = errno;
                break;
            }
            lat[i] = probe_now_ns() - s;
        }
        uint64_t elapsed = probe_now_ns() - t0;
        if (rc) {
            probe_error(PROBE, "fsync_lat", "pwrite/fdatasync: %s", strerror(rc));
            break;
        }
        qsort(lat, io->fsync_n, sizeof *lat, cmp_u64);
        probe_metric m[2] = {
            {"p50_us", (double)percentile(lat, io->fsync_n, 50) / 1e3, "us"},
            {"p99_us", (double)percentile(lat, io->fsync_n, 99) / 1e3, "us"},
        };
        probe_emit(PROBE, "fsync_lat", io->fsync_n, elapsed, m, 2, 0, PROBE_NO_EXTRA);
    }
out:
    close(fd);
    unlinkat(g_dirfd, io->fsyncf, 0);
    free(lat);
}

static int op_create_unlink(void *vio, uint64_t n, uint64_t *cks)
{
    struct io *io = vio;
    char name[96];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%scu-%" PRIu64, g_prefix, io->cu_seq++);
        int fd = openat(g_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            probe_set_err("create %s/%s: %s", io->dir, name, strerror(errno));
            return errno ? errno : EIO;
        }
        close(fd);
        if (unlinkat(g_dirfd, name, 0) != 0) {
            probe_set_err("unlink %s/%s: %s", io->dir, name, strerror(errno));
            return errno ? errno : EIO;
        }
    }
    *cks = 0;
    return 0;
}

static void run_create_unlink(const probe_args *a, struct io *io)
{
    uint64_t n = 16;
    for (uint64_t r = 0; r < a->reps; r++) {
        uint64_t elapsed = 0, cks = 0;
        int rc = probe_calibrate(op_create_unlink, io, a->min_ms, &n, &elapsed, &cks);
        if (rc) {
            probe_error(PROBE, "create_unlink", "%s", probe_strerr(rc));
            return;
        }
        probe_emit1(PROBE, "create_unlink", n, elapsed, "ops_per_s",
                    (double)n / (double)elapsed * 1e9, "ops/s", cks, PROBE_NO_EXTRA);
    }
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    probe_ready();

    probe_args a;
    probe_args_init(&a, PROBE, USAGE, OPS, NOPS);
    struct io io;
    memset(&io, 0, sizeof io);
    io.rfd = -1;
    io.page_cache = -1;
    io.fsync_n = 200;
    uint64_t file_mib = 64;
    static const struct option longopts[] = {
        PROBE_COMMON_LONGOPTS,
        {"dir", required_argument, NULL, OPT_DIR},
        {"file-mib", required_argument, NULL, OPT_FILE_MIB},
        {"fsync-n", required_argument, NULL, OPT_FSYNC_N},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (probe_common_opt(&a, ch, argv))
            continue;
        switch (ch) {
        case OPT_DIR: io.dir = optarg; break;
        case OPT_FILE_MIB: file_mib = probe_parse_u64(&a, "file-mib", optarg, 1, 1 << 20); break;
        case OPT_FSYNC_N: io.fsync_n = probe_parse_u64(&a, "fsync-n", optarg, 1, 10000000); break;
        default: probe_die_usage(&a, "unhandled option");
        }
    }
    probe_finish_args(&a, argc, argv);
    if (!io.dir || !*io.dir)
        probe_die_usage(&a, "--dir PATH is required");
    io.file_bytes = file_mib * MIB;

    /* Handlers first, then the directory: from here on every exit path,
     * including a signal, removes our files. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);

    g_dirfd = open(io.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g_dirfd < 0)
        probe_die(PROBE, "--dir %s: %s", io.dir, strerror(errno));
    g_prefix_len = (size_t)snprintf(g_prefix, sizeof g_prefix, "isobench-io-%ld-", (long)getpid());
    snprintf(io.data, sizeof io.data, "%sdata", g_prefix);
    snprintf(io.fsyncf, sizeof io.fsyncf, "%sfsync", g_prefix);

    void *buf = NULL;
    if (posix_memalign(&buf, PAGE, BLK) != 0 || !buf)
        fatal("cannot allocate the 1 MiB I/O buffer");
    io.buf = buf;
    /* Non-zero, non-repeating content (no zero-page or compression shortcuts). */
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < BLK; i += 8) {
        uint64_t v = xorshift64star(&seed);
        memcpy(io.buf + i, &v, 8);
    }

    for (int k = 0; k < a.nsel; k++) {
        switch (a.sel[k]) {
        case OP_SEQ_WRITE: run_seq_write(&a, &io); break;
        case OP_SEQ_READ: run_seq_read(&a, &io); break;
        case OP_RAND_READ: run_rand_read(&a, &io); break;
        case OP_FSYNC_LAT: run_fsync_lat(&a, &io); break;
        case OP_CREATE_UNLINK: run_create_unlink(&a, &io); break;
        }
    }

    cleanup_files();
    close(g_dirfd);
    free(buf);
    return 0;
}
