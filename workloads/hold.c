/*
 * hold probe: prints `ready`, then holds (an idle instance) until it is told to stop:
 * SIGTERM, SIGINT or SIGHUP end it with status 0. --max-s N ends it on its own after
 * N seconds (default 3600), so an instance whose harness vanished does not idle forever.
 *
 * Used for held instances: N idle instances while the N+1-th starts, a server's
 * stand-in while something else happens. As pid 1 of a pid namespace (a container's
 * init) a signal without a handler is ignored: the handlers below are what make
 * SIGTERM work there.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: hold [--max-s N]\n"
    "Prints `ready`, then waits: SIGTERM/SIGINT/SIGHUP end it with status 0,\n"
    "and so does the end of N seconds (default 3600).\n";

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    unsigned max_s = 3600;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--help") == 0) {
            return write(1, USAGE, sizeof USAGE - 1) < 0;
        } else if (strcmp(argv[i], "--max-s") == 0 && i + 1 < argc &&
                   (max_s = (unsigned)strtoul(argv[i + 1], &end, 10), *end == '\0') &&
                   max_s > 0) {
            i++;
        } else {
            static const char bad[] = "hold: bad arguments\n";
            if (write(2, bad, sizeof bad - 1) < 0 || write(2, USAGE, sizeof USAGE - 1) < 0)
                return 2;
            return 2;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    /* block them outside sigsuspend: a signal between the check and the wait is not lost */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, &old);
    static const char ready[] = "ready\n";
    if (write(1, ready, sizeof ready - 1) != (ssize_t)(sizeof ready - 1))
        return 1;
    alarm(max_s);
    while (!stop)
        sigsuspend(&old);
    return 0;
}
