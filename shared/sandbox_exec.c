/*
 * dcodex-exec: start one sandboxed program and report how it ended.
 *
 * Why a C helper: Linux's ru_maxrss of a child includes the memory of the process it
 * was forked from, so a program forked from the Python runner would never show less
 * than the runner's own ~40 MB. Forked from this tiny helper instead, the kernel's
 * peak-memory figure is the program's own.
 *
 * usage: dcodex-exec STATUS_FD CPU_SOFT CPU_HARD AS FSIZE NOFILE STACK NPROC UID GID -- ARGV...
 *   (NPROC, UID, GID: -1 for "leave as is"; ARGV[0] is a path, not looked up on PATH)
 *
 * On STATUS_FD it writes "pid N\n" once the program is started (N is also its process
 * group), then "exit STATUS UTIME_US STIME_US MAXRSS_KB\n" when it has ended, or
 * "error ERRNO\n" when it could not be started. Before reaping the program it kills
 * what remains of its process group.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static long long arg(char **argv, int i) { return strtoll(argv[i], NULL, 10); }

static int error_fd = -1; /* in the child: where a failure to start is reported */

/* Tell the parent why the program could not be started, then give up. */
static void fail(void) {
    int failure = errno;
    (void)!write(error_fd, &failure, sizeof failure);
    _exit(127);
}

static void limit(int which, long long soft, long long hard) {
    struct rlimit value = {(rlim_t)soft, (rlim_t)hard};
    if (setrlimit(which, &value) != 0) fail();
}

static void report(int fd, const char *text) {
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(fd, text, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        left -= (size_t)n;
    }
}

static void become_program(char **argv, int status_fd) {
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    close(status_fd);
    limit(RLIMIT_CORE, 0, 0);
    limit(RLIMIT_CPU, arg(argv, 2), arg(argv, 3));
    limit(RLIMIT_FSIZE, arg(argv, 5), arg(argv, 5));
    limit(RLIMIT_NOFILE, arg(argv, 6), arg(argv, 6));
    limit(RLIMIT_STACK, arg(argv, 7), arg(argv, 7));
    if (arg(argv, 8) >= 0) limit(RLIMIT_NPROC, arg(argv, 8), arg(argv, 8));
    long long uid = arg(argv, 9), gid = arg(argv, 10);
    if (gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0)) fail();
    if (uid >= 0 && setuid((uid_t)uid) != 0) fail();
    /* No setuid binary may give the program privileges back (with our rlimits on). */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail();
    limit(RLIMIT_AS, arg(argv, 4), arg(argv, 4));
    execv(argv[12], &argv[12]); /* no PATH search, no /bin/sh fallback on ENOEXEC */
    fail();
}

int main(int argc, char **argv) {
    if (argc < 13 || strcmp(argv[11], "--") != 0) {
        fprintf(stderr, "usage: dcodex-exec STATUS_FD CPU_SOFT CPU_HARD AS FSIZE NOFILE "
                        "STACK NPROC UID GID -- ARGV...\n");
        return 2;
    }
    int status_fd = (int)arg(argv, 1);
    int exec_error[2];
    if (pipe2(exec_error, O_CLOEXEC) != 0) return 3;

    pid_t child = fork();
    if (child < 0) return 3;
    if (child == 0) {
        close(exec_error[0]);
        error_fd = exec_error[1];
        become_program(argv, status_fd);
    }
    setpgid(child, child); /* also here, so the group exists before anyone signals it */
    close(exec_error[1]);
    /* The program's pipes must reach EOF when its group is gone, not when we exit. */
    close(0);
    close(1);
    close(2);

    char line[128];
    int failure = 0;
    ssize_t got;
    do got = read(exec_error[0], &failure, sizeof failure);
    while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof failure) {
        waitpid(child, NULL, 0);
        snprintf(line, sizeof line, "error %d\n", failure);
        report(status_fd, line);
        return 0;
    }
    snprintf(line, sizeof line, "pid %d\n", (int)child);
    report(status_fd, line);

    siginfo_t info;
    while (waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {}
    kill(-child, SIGKILL); /* nothing the program forked into its group outlives it */

    int status = 0;
    struct rusage usage;
    while (wait4(child, &status, 0, &usage) < 0 && errno == EINTR) {}
    snprintf(line, sizeof line, "exit %d %lld %lld %ld\n", status,
             (long long)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec,
             (long long)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec,
             usage.ru_maxrss);
    report(status_fd, line);
    return 0;
}
