/*
 * pause: the init of a pod sandbox (what Kubernetes' pause image runs), for the `cri`
 * environment, whose runtime has no registry to pull one from. It holds the pod's
 * namespaces and does nothing: SIGTERM/SIGINT end it with status 0, SIGCHLD reaps
 * whatever is reparented to it (a pod that shares its PID namespace). Prints nothing,
 * so it is not a probe: it never runs outside a sandbox.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_quit(int sig)
{
    (void)sig;
    _exit(0);
}

static void on_child(int sig)
{
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        static const char usage[] = "usage: pause (a pod sandbox's init: waits for SIGTERM)\n";
        ssize_t n = write(2, usage, sizeof usage - 1);
        (void)n;
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_quit;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;)
        pause();
}
