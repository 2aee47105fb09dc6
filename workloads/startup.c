/*
 * startup probe: prints `ready` and exits 0. Nothing else: the harness times
 * the phases around it (submit -> `ready` -> exit -> cleaned).
 *
 * Deliberately minimal: one write(2) straight to fd 1 (no stdio buffering to
 * flush), no allocation, no files, no /proc.
 */
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: startup [--help]\n"
    "Prints `ready` and exits 0; the harness times the phases around it.\n";

int main(int argc, char **argv)
{
    static const char ready[] = "ready\n";
    if (write(1, ready, sizeof ready - 1) != (ssize_t)(sizeof ready - 1))
        return 1;
    if (argc > 1) {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            if (write(1, USAGE, sizeof USAGE - 1) < 0)
                return 1;
            return 0;
        }
        static const char bad[] = "startup: takes no arguments\n";
        if (write(2, bad, sizeof bad - 1) < 0 || write(2, USAGE, sizeof USAGE - 1) < 0)
            return 2;
        return 2;
    }
    return 0;
}
