/*
 * dcodex-exec: start one sandboxed program and report how it ended.
 *
 * Why a C helper: Linux's ru_maxrss of a child includes the memory of the process it
 * was forked from, so a program forked from the Python runner would never show less
 * than the runner's own ~40 MB; and namespaces, mounts and a pid-1 reaper need code
 * that runs between fork and exec, which Python cannot do safely.
 *
 * usage: dcodex-exec --config-fd FD       (the options below, NUL-separated, read from FD)
 *        dcodex-exec [OPTION...] -- ARGV...      (ARGV[0] is a path, not looked up)
 * The services pass the options by file descriptor: the namespace's pid 1 is a fork of
 * this process, and its /proc/1/cmdline must not show the program host paths or uids.
 *   --status-fd N         where reports go (required)
 *   --cpu SOFT HARD       RLIMIT_CPU seconds          --as BYTES      RLIMIT_AS
 *   --fsize BYTES         RLIMIT_FSIZE                --nofile N      RLIMIT_NOFILE
 *   --stack BYTES         RLIMIT_STACK                --nproc N       RLIMIT_NPROC
 *   --uid N --gid N       run the program as this uid/gid
 *   --cgroup DIR          join this cgroup (repeatable; written before anything runs)
 *   --namespaces          private pid, mount, network, IPC and UTS namespaces (root)
 *   --userns              also a user namespace mapping our uid to 0 (without root)
 *   --workdir DIR         with namespaces: copy DIR's files into a fresh tmpfs that is
 *                         the program's root; the program runs in /box
 *   --disk BYTES          size of that tmpfs (the only writable place: /box and /tmp)
 *   --ro PATH             show PATH read-only in the sandbox (repeatable)
 *   --output NAME         copy /box/NAME back to DIR at the end (repeatable): only a
 *                         regular file with one link, read through a handle on /box
 *                         opened before the program started
 *   --output-bytes N      budget of those copies together (default 0: nothing copied)
 *   --deadline-ms N       the copies stop this long after the helper started
 *   --sweep-uid           without namespaces: at the end, kill every process of --uid
 *                         and remove its IPC objects (the uid is the run's alone)
 *   --no-seccomp          no system call filter (the sandbox benchmark's comparison only)
 *   --wall-ms N           kill the run after N ms, whatever the supervisor does
 *   --deferred            with namespaces: a sandbox started ahead of its run (no ARGV);
 *                         the program's files and argv come first on its stdin, see
 *                         `take_handover`; --deadline-ms then counts from the handover
 *
 * The run also ends when the supervisor dies (kill -9 of the runner): the helper asks
 * for a parent-death signal, and both it and the wall clock kill everything the run
 * started, so nothing outlives its supervisor or its wall clock.
 *
 * Reports on the status fd, one line each: "pid N" once started (N is the program's
 * process group without namespaces, else the pid-1 reaper that owns the namespace,
 * which kills everything in it on SIGUSR1 and passes SIGINT and SIGTERM on to the
 * program's process group); then "exit STATUS UTIME_US STIME_US
 * MAXRSS_KB" (CPU time of every process of the run, all of them reaped), or
 * "error ERRNO STEP" when the program could not be started; and before the exit line
 * "skipped NAME REASON" for an expected output that was not copied back.
 *
 * Every program gets, between fork and exec: rlimits, a fresh session keyring (and,
 * with a uid of its own, an emptied user keyring), no_new_privs, oom_score_adj 1000
 * (the OOM killer's first choice; the helper is not even in the run's cgroups) and
 * the seccomp filter of `install_seccomp` (docs/security.md).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/seccomp.h>
#ifndef DCODEX_SECCOMP_BPF
#include <seccomp.h>
#endif
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LIST 64

struct config {
    int status_fd;
    long long cpu_soft, cpu_hard, as, fsize, nofile, stack, nproc, uid, gid, disk;
    long long output_bytes, deadline_ms, wall_ms;
    int namespaces, userns, no_seccomp, sweep, deferred;
    const char *workdir;
    const char *outputs[MAX_LIST];
    int output_count;
    const char *ro[MAX_LIST];
    int ro_count;
    const char *cgroups[MAX_LIST];
    int cgroup_count;
    char **argv;
};

static struct config cfg = {.status_fd = -1, .cpu_soft = -1, .cpu_hard = -1, .as = -1,
                            .fsize = -1, .nofile = -1, .stack = -1, .nproc = -1,
                            .uid = -1, .gid = -1, .disk = 64 << 20,
                            .output_bytes = 0, .deadline_ms = -1, .wall_ms = -1};
static struct timespec started; /* CLOCK_MONOTONIC when the helper began */

/* Write a whole report to a status descriptor (a run's, before the options name it). */
static void report_to(int status_fd, const char *text) {
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(status_fd, text, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        left -= (size_t)n;
    }
}

static void report(const char *text) { report_to(cfg.status_fd, text); }

/* SIGALRM once `ms` have passed. */
static void start_wall_timer(long long ms) {
    struct itimerval timer = {.it_value = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
}

/* A setup step failed: say which, and end this process. */
static void setup_failed(const char *step) {
    char line[256];
    snprintf(line, sizeof line, "error %d %s\n", errno, step);
    report(line);
    _exit(0);
}

static int write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/*
 * Join the run's cgroups. Only the run's own processes do (the reaper, or the program
 * without namespaces): the helper stays out, so that the OOM killer of the run's
 * memory cgroup can never pick it, and the run is over when the cgroup is empty.
 */
static int join_cgroups(void) {
    for (int i = 0; i < cfg.cgroup_count; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/cgroup.procs", cfg.cgroups[i]);
        if (write_text(path, "0") != 0) return -1;
    }
    return 0;
}

/* --- the program itself ---------------------------------------------------------- */

static int exec_error_fd = -1; /* the program tells its parent why exec failed */

static void program_failed(void) {
    int failure = errno;
    (void)!write(exec_error_fd, &failure, sizeof failure);
    _exit(127);
}

static void limit(int which, long long value_soft, long long value_hard) {
    if (value_soft < 0) return;
    struct rlimit value = {(rlim_t)value_soft, (rlim_t)value_hard};
    if (setrlimit(which, &value) != 0) program_failed();
}

/* In a user namespace the program is "root" there: take every capability away. */
static void drop_capabilities(void) {
    for (int cap = 0; cap <= 63; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0) program_failed();
}

#ifdef DCODEX_SECCOMP_BPF
/* The filter as BPF, exported at build time by the libseccomp build of this same file
   (`dcodex_export_filter`) and compiled in (`helper.py`): the static build links no
   libseccomp, and no run builds the filter. */
static const struct sock_filter precompiled_filter[] = {DCODEX_SECCOMP_BPF};
static struct sock_fprog compiled_filter = {
    sizeof precompiled_filter / sizeof *precompiled_filter,
    (struct sock_filter *)precompiled_filter,
};

static void compile_filter(void) {}
#else
/*
 * The system call filter. A denylist (default: allow), for reasons docs/security.md
 * gives: every call below gets EPERM, a plain error runtimes already handle (libuv
 * falls back from io_uring, Python raises PermissionError), never a kill.
 */
static const char *const denied_calls[] = {
    /* namespaces and mounts: the sandbox's own view is final */
    "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "open_tree_attr", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr",
    /* keyrings: kernel state that outlives the run, per uid */
    "add_key", "request_key", "keyctl",
    /* large, often-exploited kernel surface no judged program needs */
    "io_uring_setup", "io_uring_enter", "io_uring_register", "perf_event_open", "bpf",
    "userfaultfd",
    /* looking into or at other processes */
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "lookup_dcookie", "fanotify_init", "name_to_handle_at", "open_by_handle_at",
    /* the machine's own state: kernels, modules, clocks, swap, accounting */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module", "acct", "swapon", "swapoff",
    "reboot", "syslog", "settimeofday", "stime", "clock_settime", "clock_adjtime",
    "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm", "quotactl",
    "quotactl_fd", "nfsservctl", "vhangup", "uselib", "ustat", "sysfs", "_sysctl",
    "vm86", "vm86old", "move_pages", "migrate_pages",
};

/* clone and unshare may do anything but make a namespace. */
static const unsigned long namespace_flags[] = {
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
    CLONE_NEWNET,
};
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static int deny(scmp_filter_ctx filter, uint32_t action, const char *name) {
    int number = seccomp_syscall_resolve_name(name);
    if (number == __NR_SCMP_ERROR || number < 0) return 0; /* not a call of this arch */
    return seccomp_rule_add(filter, action, number, 0);
}

/* The filter's rules, in a new libseccomp context (*made); 0, else a negative errno. */
static int build_filter(scmp_filter_ctx *made) {
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
    if (filter == NULL) return -ENOMEM;
    *made = filter;
    /* Another ABI's numbers (int 0x80, x32) would slip past every rule: kill instead. */
    int failed = seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    /* A binary tree of the rules rather than a list (libseccomp >= 2.5; else a list). */
    seccomp_attr_set(filter, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    for (size_t i = 0; !failed && i < sizeof denied_calls / sizeof *denied_calls; i++)
        failed = deny(filter, SCMP_ACT_ERRNO(EPERM), denied_calls[i]);
    /* clone3 passes its flags in memory, where a filter cannot look: ENOSYS makes libc
       fall back to clone, whose flags it can. */
    if (!failed) failed = deny(filter, SCMP_ACT_ERRNO(ENOSYS), "clone3");
    for (size_t i = 0; !failed && i < sizeof namespace_flags / sizeof *namespace_flags; i++) {
        unsigned long flag = namespace_flags[i];
        failed = seccomp_rule_add(filter, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
        if (!failed)
            failed = seccomp_rule_add(filter, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                                      SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    }
    if (!failed)
        failed = seccomp_rule_add(filter, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWTIME, CLONE_NEWTIME));
    return failed;
}

/* The filter's BPF written to `fd`: 0, else a negative errno. The static build of the
   helper compiles it in (`helper.py`); a zygote reads it back (`compile_filter`). */
__attribute__((visibility("default"))) int dcodex_export_filter(int fd) {
    scmp_filter_ctx filter = NULL;
    int failed = build_filter(&filter);
    if (!failed) failed = seccomp_export_bpf(filter, fd);
    if (filter != NULL) seccomp_release(filter);
    return failed;
}

/* The filter as BPF, built once by a zygote (`dcodex_zygote_init`) for every program it
   forks: building it is most of its cost (libseccomp's allocations and code
   generation, some 0.2 ms a run), and it is the same for every run. */
static struct sock_fprog compiled_filter = {0, NULL};

static void compile_filter(void) {
    struct stat size;
    int memory = memfd_create("dcodex-seccomp", MFD_CLOEXEC);
    if (memory < 0 || dcodex_export_filter(memory) != 0 || fstat(memory, &size) != 0)
        goto done;
    size_t count = (size_t)size.st_size / sizeof(struct sock_filter);
    if (count * sizeof(struct sock_filter) != (size_t)size.st_size) goto done; /* cut short */
    struct sock_filter *code = malloc((size_t)size.st_size);
    if (code == NULL || count == 0 || count > BPF_MAXINSNS ||
        pread(memory, code, (size_t)size.st_size, 0) != size.st_size) {
        free(code);
        goto done;
    }
    compiled_filter.len = (unsigned short)count;
    compiled_filter.filter = code;
done: /* without it, each program builds the filter itself, as a cold run's does */
    if (memory >= 0) close(memory);
}

#endif

static int install_seccomp(void) {
    if (compiled_filter.filter != NULL) {
        /* What seccomp_load does with these rules and its default attributes (no flag;
           no_new_privs is set already). */
        return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &compiled_filter) == 0 ? 0
                                                                                     : -errno;
    }
#ifdef DCODEX_SECCOMP_BPF
    return -EINVAL; /* not reached: the filter is compiled in */
#else
    scmp_filter_ctx filter = NULL;
    int failed = build_filter(&filter);
    if (!failed) failed = seccomp_load(filter);
    if (filter != NULL) seccomp_release(filter);
    return failed;
#endif
}

/* A session keyring of its own, and (with a uid of its own) an empty user keyring:
   nothing a previous run of this uid kept there is found. */
static void fresh_keyrings(void) {
    syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL);
    if (cfg.uid >= 0) syscall(SYS_keyctl, KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING);
}

/* --- deferred exec: a sandbox started ahead, given its program later ---------------- */

/* Marks a failure of the handover (not of exec) on the program's error pipe. */
#define HANDOVER_FAILED 0x10000
/* The handover's description (names, modes, sizes, argv) is small; the files are not. */
#define HANDOVER_MAX_META (1 << 20)
#define HANDOVER_LENGTH_DIGITS 10

static void handover_failed(int error) {
    int failure = error | HANDOVER_FAILED;
    (void)!write(exec_error_fd, &failure, sizeof failure);
    _exit(127);
}

/* Exactly `count` bytes of stdin, never more (what follows is the run's own stdin);
   0, or -1 at EOF or an error. */
static int read_exact(char *buffer, size_t count) {
    while (count > 0) {
        ssize_t n = read(0, buffer, count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buffer += n;
        count -= (size_t)n;
    }
    return 0;
}

/* A whole decimal (or, base 8, octal) number in [0, max]; else -1. */
static long long parse_count(const char *text, int base, long long max) {
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, base);
    if (errno != 0 || end == text || *end != '\0' || value < 0 || value > max) return -1;
    return value;
}

/* A plain name in /box: not empty, not "." or "..", no "/". */
static int plain_name(const char *name) {
    return name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

/* Write one handed-over file of `size` bytes from stdin into the working directory. */
static void receive_file(const char *name, long long mode, long long size) {
    if (!plain_name(name)) handover_failed(EINVAL);
    /* A new file, never through a link or over anything there: as a cold run's copy. */
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) handover_failed(errno);
    char buffer[65536];
    while (size > 0) {
        size_t chunk = size < (long long)sizeof buffer ? (size_t)size : sizeof buffer;
        if (read_exact(buffer, chunk) != 0) handover_failed(EPROTO); /* shorter than said */
        ssize_t written = write(fd, buffer, chunk);
        if (written != (ssize_t)chunk) handover_failed(written < 0 ? errno : ENOSPC);
        size -= (long long)chunk;
    }
    /* The mode a cold run's copy gets, whatever the umask. */
    if (fchmod(fd, (mode_t)(mode & 0755)) != 0) handover_failed(errno);
    close(fd);
}

/*
 * The handover, read from stdin by the program process (its uid, namespaces, rlimits,
 * keyrings, no_new_privs and seccomp filter in place): HANDOVER_LENGTH_DIGITS decimal
 * digits giving the length of a description, the description (NUL-separated fields:
 * the number of files; per file its name, octal mode and size; then the argv, at least
 * ARGV[0]), then the files' bytes one after the other. The run's own stdin follows.
 * A sandbox whose stdin ends before anything was handed over ends quietly (unused).
 */
static void take_handover(void) {
    char digits[HANDOVER_LENGTH_DIGITS + 1] = {0};
    ssize_t first;
    do first = read(0, digits, 1);
    while (first < 0 && errno == EINTR);
    if (first == 0) _exit(0); /* EOF: never used */
    if (first < 0 || read_exact(digits + 1, HANDOVER_LENGTH_DIGITS - 1) != 0)
        handover_failed(EPROTO);
    long long length = parse_count(digits, 10, HANDOVER_MAX_META);
    if (length <= 0) handover_failed(EPROTO);
    char *meta = malloc((size_t)length + 1);
    if (meta == NULL) handover_failed(ENOMEM);
    if (read_exact(meta, (size_t)length) != 0) handover_failed(EPROTO);
    meta[length] = '\0';
    if (meta[length - 1] != '\0') handover_failed(EPROTO); /* every field ends in a NUL */
    char *fields[4096];
    int count = 0;
    for (long long at = 0; at < length; at += (long long)strlen(meta + at) + 1) {
        if (count == (int)(sizeof fields / sizeof *fields) - 1) handover_failed(E2BIG);
        fields[count++] = meta + at;
    }
    fields[count] = NULL;
    long long files = count > 0 ? parse_count(fields[0], 10, MAX_LIST) : -1;
    if (files < 0 || count < 1 + 3 * files + 1) handover_failed(EPROTO);
    /* Every size is checked before anything is written: a lie ends the run early. */
    for (long long i = 0; i < files; i++) {
        if (parse_count(fields[1 + 3 * i + 1], 8, 07777) < 0 ||
            parse_count(fields[1 + 3 * i + 2], 10, 1LL << 40) < 0)
            handover_failed(EPROTO);
    }
    for (long long i = 0; i < files; i++)
        receive_file(fields[1 + 3 * i], parse_count(fields[1 + 3 * i + 1], 8, 07777),
                     parse_count(fields[1 + 3 * i + 2], 10, 1LL << 40));
    cfg.argv = &fields[1 + 3 * files];
    /* Held back until now so that handed-over files are not bounded by it (a cold run's
       are copied in by the reaper, outside the program's limits). */
    limit(RLIMIT_FSIZE, cfg.fsize, cfg.fsize);
}

/* Set by the zygote's entry (the end of this file): the program goes back into the
   interpreter it was forked from instead of exec'ing one. */
static void (*resume_program)(void) = NULL;

static void become_program(void) {
    /* When the run's memory cgroup is full, the OOM killer takes the program first
       (set while still privileged: /proc/self is root's once we change uid). */
    write_text("/proc/self/oom_score_adj", "1000");
    if (!cfg.namespaces && join_cgroups() != 0) program_failed();
    /* Every disposition the default, nothing blocked: exec keeps ignored signals and the
       mask, and a service started in the background (SIGINT and SIGQUIT ignored) or
       under nohup (SIGHUP) must not hand that on to the programs it runs. */
    for (int signal_number = 1; signal_number < NSIG; signal_number++)
        if (signal_number != SIGKILL && signal_number != SIGSTOP) signal(signal_number, SIG_DFL);
    sigset_t nothing;
    sigemptyset(&nothing);
    sigprocmask(SIG_SETMASK, &nothing, NULL);
    limit(RLIMIT_CORE, 0, 0);
    limit(RLIMIT_CPU, cfg.cpu_soft, cfg.cpu_hard);
    if (!cfg.deferred) limit(RLIMIT_FSIZE, cfg.fsize, cfg.fsize); /* else after the handover */
    limit(RLIMIT_NOFILE, cfg.nofile, cfg.nofile);
    limit(RLIMIT_STACK, cfg.stack, cfg.stack);
    limit(RLIMIT_NPROC, cfg.nproc, cfg.nproc);
    if (cfg.gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)cfg.gid) != 0))
        program_failed();
    if (cfg.uid >= 0 && setuid((uid_t)cfg.uid) != 0) program_failed();
    if (cfg.userns) drop_capabilities();
    fresh_keyrings();
    /* No setuid binary may give the program privileges back (with our rlimits on). */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) program_failed();
    if (!cfg.no_seccomp) {
        int failed = install_seccomp(); /* it allocates: before the address-space limit */
        if (failed) {
            errno = -failed;
            program_failed();
        }
    }
    if (cfg.deferred) take_handover();
    limit(RLIMIT_AS, cfg.as, cfg.as);
    if (resume_program != NULL) resume_program(); /* returns only on failure */
    execv(cfg.argv[0], cfg.argv); /* no PATH search, no /bin/sh fallback on ENOEXEC */
    program_failed();
}

/* Fork the program; 0 once it has exec'd, else the errno of its failure. */
static int start_program(pid_t *pid) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return errno;
    *pid = fork();
    if (*pid < 0) return errno;
    if (*pid == 0) {
        close(pipefd[0]);
        exec_error_fd = pipefd[1];
        setpgid(0, 0);
        close(cfg.status_fd);
        become_program();
    }
    setpgid(*pid, *pid); /* the group exists before anyone signals it */
    close(pipefd[1]);
    int failure = 0;
    ssize_t got;
    do got = read(pipefd[0], &failure, sizeof failure);
    while (got < 0 && errno == EINTR);
    close(pipefd[0]);
    if (got == (ssize_t)sizeof failure) {
        waitpid(*pid, NULL, 0);
        return failure;
    }
    return 0;
}

static void report_exit(int status, struct rusage *usage) {
    char line[160];
    snprintf(line, sizeof line, "exit %d %lld %lld %ld\n", status,
             (long long)usage->ru_utime.tv_sec * 1000000 + usage->ru_utime.tv_usec,
             (long long)usage->ru_stime.tv_sec * 1000000 + usage->ru_stime.tv_usec,
             usage->ru_maxrss);
    report(line);
}

static void report_start_error(int failure) {
    char line[64];
    if (failure & HANDOVER_FAILED)
        snprintf(line, sizeof line, "error %d handover\n", failure & ~HANDOVER_FAILED);
    else
        snprintf(line, sizeof line, "error %d exec\n", failure);
    report(line);
}

/* The program's pipes must reach EOF when its processes are gone, not when we exit:
   the program has its own copies once it is started. */
static void close_stdio(void) {
    close(0);
    close(1);
    close(2);
}

/* --- the filesystem view (inside the new mount namespace) -------------------------- */

static void make_parents(const char *path) {
    char buffer[4096];
    snprintf(buffer, sizeof buffer, "%s", path);
    for (char *slash = strchr(buffer + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(buffer, 0755);
        *slash = '/';
    }
}

/* Mount flags a read-only remount must keep (a user namespace may not drop them). */
static unsigned long kept_flags(const char *path) {
    struct statvfs info;
    unsigned long flags = 0;
    if (statvfs(path, &info) != 0) return 0;
    if (info.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (info.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (info.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    return flags;
}

/* Show host `path` at `root`+`path`, read-only; a top-level symlink stays a symlink. */
static void show_read_only(const char *root, const char *path) {
    char target[4096], link[4096];
    struct stat info;
    if (lstat(path, &info) != 0) return; /* not on this host: nothing to show */
    snprintf(target, sizeof target, "%s%s", root, path);
    make_parents(target);
    if (S_ISLNK(info.st_mode)) {
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0) setup_failed("readlink");
        link[n] = '\0';
        if (symlink(link, target) != 0 && errno != EEXIST) setup_failed("symlink");
        return;
    }
    if (S_ISDIR(info.st_mode)) {
        if (mkdir(target, 0755) != 0 && errno != EEXIST) setup_failed("mkdir");
    } else {
        int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) setup_failed("mknod");
        close(fd);
    }
    if (mount(path, target, NULL, MS_BIND | MS_REC, NULL) != 0) setup_failed("bind");
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | kept_flags(path);
    if (mount(NULL, target, NULL, flags, NULL) != 0) setup_failed("remount-ro");
}

/* Copy the regular files of directory `from` into `to` (top level only). */
static void copy_files(int from, int to, long long owner_uid, long long owner_gid) {
    int scan = dup(from);
    if (scan < 0) setup_failed("dup");
    DIR *dir = fdopendir(scan);
    if (dir == NULL) setup_failed("opendir");
    rewinddir(dir);
    struct dirent *entry;
    char buffer[65536];
    while ((entry = readdir(dir)) != NULL) {
        struct stat info;
        if (entry->d_name[0] == '.' &&
            (entry->d_name[1] == '\0' || (entry->d_name[1] == '.' && entry->d_name[2] == '\0')))
            continue;
        int in = openat(from, entry->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (in < 0) continue;
        if (fstat(in, &info) != 0 || !S_ISREG(info.st_mode)) {
            close(in);
            continue;
        }
        int out = openat(to, entry->d_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                         info.st_mode & 0755);
        if (out < 0) setup_failed("copy-open");
        ssize_t n;
        while ((n = read(in, buffer, sizeof buffer)) > 0)
            if (write(out, buffer, (size_t)n) != n) setup_failed("copy-write");
        if (owner_uid >= 0 && fchown(out, (uid_t)owner_uid, (gid_t)owner_gid) != 0)
            setup_failed("copy-chown");
        close(in);
        close(out);
    }
    closedir(dir);
}

static void show_device(const char *root, const char *name) {
    char source[64], target[4096];
    snprintf(source, sizeof source, "/dev/%s", name);
    snprintf(target, sizeof target, "%s/dev/%s", root, name);
    int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) setup_failed("dev");
    close(fd);
    if (mount(source, target, NULL, MS_BIND, NULL) != 0) setup_failed("dev-bind");
}

/*
 * Build the program's root: a size-capped tmpfs mounted over the (private) work
 * directory, holding /box (its files, the working directory), /tmp, a fresh /proc,
 * a few devices and the read-only paths; then pivot into it.
 */
static int enter_new_root(void) {
    const char *root = cfg.workdir;
    int host_dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (host_dir < 0) setup_failed("workdir");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) setup_failed("private");
    char options[64];
    snprintf(options, sizeof options, "size=%lld,mode=0755", cfg.disk);
    if (mount("dcodex", root, "tmpfs", MS_NOSUID | MS_NODEV, options) != 0)
        setup_failed("tmpfs");
    char path[4096];
    snprintf(path, sizeof path, "%s/box", root);
    if (mkdir(path, 0700) != 0) setup_failed("box");
    if (cfg.uid >= 0 && chown(path, (uid_t)cfg.uid, (gid_t)cfg.gid) != 0) setup_failed("chown");
    int box = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (box < 0) setup_failed("box-open");
    copy_files(host_dir, box, cfg.uid, cfg.gid);
    close(box);
    snprintf(path, sizeof path, "%s/tmp", root);
    if (mkdir(path, 01777) != 0 || chmod(path, 01777) != 0) setup_failed("tmp");
    snprintf(path, sizeof path, "%s/proc", root);
    if (mkdir(path, 0555) != 0) setup_failed("proc-dir");
    snprintf(path, sizeof path, "%s/dev", root);
    if (mkdir(path, 0755) != 0) setup_failed("dev-dir");
    const char *devices[] = {"null", "zero", "full", "random", "urandom"};
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) show_device(root, devices[i]);
    snprintf(path, sizeof path, "%s/dev/fd", root);
    if (symlink("/proc/self/fd", path) != 0) setup_failed("dev-fd");
    /* Last, so that a read-only path may lie under /tmp, say, without hiding it. */
    for (int i = 0; i < cfg.ro_count; i++) show_read_only(root, cfg.ro[i]);
    /* /proc before leaving the old root: in a user namespace (a pod with hostUsers:
       false) the kernel lets proc be mounted only while a fully visible proc is in
       the mount namespace. Where the host masks parts of its own (as container runtimes
       do without procMount: Unmasked), a user namespace gets an empty /proc, never the
       host's. */
    snprintf(path, sizeof path, "%s/proc", root);
    if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 &&
        !(cfg.userns && errno == EPERM))
        setup_failed("proc");

    if (chdir(root) != 0) setup_failed("chdir-root");
    if (syscall(SYS_pivot_root, ".", ".") != 0) setup_failed("pivot_root");
    if (umount2(".", MNT_DETACH) != 0) setup_failed("umount-old-root");
    if (chdir("/") != 0) setup_failed("chdir");
    /* The root stays writable (0755): a slot uid writes /box and /tmp only; in a userns, all. */
    if (chdir("/box") != 0) setup_failed("chdir-box");
    return host_dir;
}

/* --- after the run: the expected outputs, back to the host --------------------------- */

static long long elapsed_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - started.tv_sec) * 1000LL + (now.tv_nsec - started.tv_nsec) / 1000000;
}

static int past_deadline(void) { return cfg.deadline_ms >= 0 && elapsed_ms() >= cfg.deadline_ms; }

static void skipped(const char *name, const char *reason) {
    char line[512];
    snprintf(line, sizeof line, "skipped %.200s %s\n", name, reason);
    report(line);
}

/* Copy one expected output; the bytes it took from the budget, or -1 if not copied. */
static long long copy_output(int box, int host_dir, const char *name, long long budget) {
    if (strchr(name, '/') != NULL || name[0] == '\0' || name[0] == '.') {
        skipped(name, "bad-name");
        return -1;
    }
    int in = openat(box, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (in < 0) {
        if (errno == ELOOP) skipped(name, "not-a-regular-file"); /* a symbolic link */
        return -1; /* else not produced: the caller sees it missing */
    }
    struct stat info;
    const char *problem = NULL;
    if (fstat(in, &info) != 0 || !S_ISREG(info.st_mode)) problem = "not-a-regular-file";
    else if (info.st_nlink != 1) problem = "hard-linked";
    else if (info.st_size > budget) problem = "too-large";
    if (problem != NULL) {
        skipped(name, problem);
        close(in);
        return -1;
    }
    unlinkat(host_dir, name, 0); /* a fresh file: never through what was there */
    int out = openat(host_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     info.st_mode & 0755);
    if (out < 0) {
        skipped(name, "cannot-create");
        close(in);
        return -1;
    }
    char buffer[65536];
    long long copied = 0;
    ssize_t n;
    while ((n = read(in, buffer, sizeof buffer)) > 0) {
        /* The file may still grow (a process of another run cannot write it, but a
           budget is a budget) and the wall clock goes on. */
        if (copied + n > budget) problem = "too-large";
        else if (past_deadline()) problem = "deadline";
        else if (write(out, buffer, (size_t)n) != n) problem = "write-failed";
        if (problem != NULL) break;
        copied += n;
    }
    close(in);
    close(out);
    if (problem != NULL) {
        unlinkat(host_dir, name, 0);
        skipped(name, problem);
        return -1;
    }
    return copied;
}

/* Bring the expected outputs of /box (`box`, opened before the program started, so a
   /box the program renamed or replaced by a link is not followed) back to the host. */
static void collect(int box, int host_dir) {
    long long budget = cfg.output_bytes;
    for (int i = 0; i < cfg.output_count; i++) {
        if (past_deadline()) {
            skipped(cfg.outputs[i], "deadline");
            continue;
        }
        long long used = copy_output(box, host_dir, cfg.outputs[i], budget);
        if (used > 0) budget -= used;
    }
}

/* --- pid 1 of the namespace -------------------------------------------------------- */

static volatile sig_atomic_t stop_requested = 0;
static volatile pid_t program_group = 0;

static void kill_everything(int signal_number) {
    (void)signal_number;
    stop_requested = 1; /* for a stop asked for before the program was started */
    kill(-1, SIGKILL);  /* every process of this pid namespace but us */
}

/* SIGINT and SIGTERM from the supervisor are for the program (an interactive run). */
static void forward(int signal_number) {
    if (program_group > 0) kill(-program_group, signal_number);
}

/*
 * The reaper: runs the program, then kills and reaps everything left in the
 * namespace, so its CPU time counts every process and nothing outlives the run.
 */
static void run_as_reaper(void) {
    /* SIGUSR1 (kill everything) is ours since the go (`await_go`). */
    struct sigaction on_forwarded = {.sa_handler = forward};
    sigemptyset(&on_forwarded.sa_mask);
    sigaction(SIGINT, &on_forwarded, NULL);
    sigaction(SIGTERM, &on_forwarded, NULL);
    sethostname("dcodex", 6);
    int host_dir = enter_new_root();
    int box = open("/box", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (box < 0) setup_failed("box-handle");

    pid_t program;
    int failure = start_program(&program);
    if (failure != 0) {
        report_start_error(failure);
        _exit(0);
    }
    /* Started ahead, the run began with its handover: its outputs' deadline too. */
    if (cfg.deferred) clock_gettime(CLOCK_MONOTONIC, &started);
    close_stdio();
    program_group = program;
    if (stop_requested) kill(-1, SIGKILL);
    int status = 0, program_status = 0;
    pid_t reaped;
    for (;;) {
        reaped = waitpid(-1, &status, 0);
        if (reaped < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: nothing left */
        }
        if (reaped == program) {
            program_status = status;
            kill(-1, SIGKILL);
        }
    }
    collect(box, host_dir);
    struct rusage usage;
    getrusage(RUSAGE_CHILDREN, &usage);
    report_exit(program_status, &usage);
    _exit(0);
}

/* --- the outer helper ---------------------------------------------------------------- */

/* What ends the run when the wall clock passes or our parent dies (both SIGALRM): the
   reaper (its namespace dies with it) or, without namespaces, the program's group. */
static volatile pid_t run_target = 0;
/* Our parent at start (the runner). Not simply 1 once it dies: in a container the
   runner itself is often pid 1. */
static pid_t supervisor = 0;

static void end_run(int signal_number) {
    (void)signal_number;
    if (run_target > 0) kill(cfg.namespaces ? run_target : -run_target, SIGKILL);
}

static void guard_run(pid_t target) {
    run_target = target;
    if (cfg.wall_ms > 0) start_wall_timer(cfg.wall_ms);
    if (getppid() != supervisor) end_run(0); /* it died before we asked to be told */
}

/* Map our uid and gid to 0 in `child`'s user namespace; the step that failed, or NULL. */
static const char *mapped_user(pid_t child) {
    char path[64], line[64];
    snprintf(path, sizeof path, "/proc/%d/setgroups", (int)child);
    write_text(path, "deny");
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)child);
    snprintf(line, sizeof line, "0 %d 1", (int)getuid());
    if (write_text(path, line) != 0) return "uid_map";
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)child);
    snprintf(line, sizeof line, "0 %d 1", (int)getgid());
    if (write_text(path, line) != 0) return "gid_map";
    return NULL;
}

static void map_user(pid_t child) {
    const char *failed = mapped_user(child);
    if (failed != NULL) {
        int error = errno;
        kill(child, SIGKILL);
        errno = error;
        setup_failed(failed);
    }
}

/* The namespaces a reaper is cloned into. */
static int reaper_clone_flags(int userns) {
    int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
    return userns ? flags | CLONE_NEWUSER : flags;
}

/* The handshake between a reaper and the parent that cloned it: a pipe for the go
   byte, and a pidfd of the parent (-1 where the kernel has none). */
enum { GO_READ, GO_WRITE, GO_PARENT };

static int open_go(int go[3]) {
    if (pipe2(go, O_CLOEXEC) != 0) return -1;
#ifdef SYS_pidfd_open
    go[GO_PARENT] = (int)syscall(SYS_pidfd_open, getpid(), 0);
#else
    go[GO_PARENT] = -1;
#endif
    return 0;
}

/* In the parent, once the reaper is cloned (or failed to be). */
static void close_parents_go(int go[3]) {
    close(go[GO_READ]);
    if (go[GO_PARENT] >= 0) close(go[GO_PARENT]);
}

/* In a reaper just cloned: die with our parent, and wait for its go (one byte) until it
   has mapped our uid and reported us. EOF instead means it died first; so does its
   pidfd, readable once it has exited: it can have given the go and died before our
   parent-death signal was set, which would have left us running with no one to end
   us. A stop asked for meanwhile is kept for when the program starts. */
static void await_go(int go[3]) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the namespace dies with its parent */
    struct sigaction on_usr1 = {.sa_handler = kill_everything};
    sigemptyset(&on_usr1.sa_mask);
    sigaction(SIGUSR1, &on_usr1, NULL);
    close(go[GO_WRITE]);
    char byte = 0;
    ssize_t got;
    do got = read(go[GO_READ], &byte, 1);
    while (got < 0 && errno == EINTR);
    close(go[GO_READ]);
    if (got != 1) _exit(0);
    if (go[GO_PARENT] >= 0) {
        struct pollfd parent = {.fd = go[GO_PARENT], .events = POLLIN};
        int exited = poll(&parent, 1, 0);
        close(go[GO_PARENT]);
        if (exited != 0) _exit(0); /* gone, or cannot tell */
    }
}

static void give_go(int go[3]) {
    while (write(go[GO_WRITE], "g", 1) < 0 && errno == EINTR) {}
    close(go[GO_WRITE]);
}

static void enter_run_cgroups(void) {
    if (join_cgroups() != 0) setup_failed("cgroup");
    /* A cgroup namespace rooted at the run's cgroups: /proc shows no host paths. */
    if (unshare(CLONE_NEWCGROUP) != 0) setup_failed("cgroup-namespace");
}

/* Start the reaper in fresh namespaces; it waits on `go` until we have reported. */
static pid_t start_reaper(void) {
    int go[3];
    if (open_go(go) != 0) setup_failed("pipe");
    int flags = reaper_clone_flags(cfg.userns);
    pid_t child = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (child < 0) setup_failed("clone");
    if (child == 0) {
        await_go(go);
        enter_run_cgroups();
        run_as_reaper();
    }
    close_parents_go(go);
    if (cfg.userns) map_user(child);
    setpgid(child, child);
    char line[64];
    snprintf(line, sizeof line, "pid %d\n", (int)child);
    report(line);
    give_go(go);
    return child;
}

static void run_namespaced(void) {
    pid_t reaper = start_reaper();
    guard_run(reaper);
    close_stdio();
    int status = 0;
    struct rusage usage;
    while (wait4(reaper, &status, 0, &usage) < 0 && errno == EINTR) {}
    /* The reaper reports for itself and exits 0; if it was killed, we report. */
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) report_exit(status, &usage);
}

/* The ids in a /proc/sysvipc table (its second column). */
static void remove_ipc(const char *table, int kind) {
    FILE *file = fopen(table, "re");
    if (file == NULL) return;
    char line[512];
    if (fgets(line, sizeof line, file) == NULL) { /* the header */
        fclose(file);
        return;
    }
    int id;
    while (fgets(line, sizeof line, file) != NULL) {
        if (sscanf(line, "%*d %d", &id) != 1) continue;
        /* Only the owner may remove an object: as the slot's uid, we remove its own. */
        if (kind == 0) shmctl(id, IPC_RMID, NULL);
        else if (kind == 1) semctl(id, 0, IPC_RMID);
        else msgctl(id, IPC_RMID, NULL);
    }
    fclose(file);
}

/* Whether a process other than us, not a zombie, has `uid` as its real, effective or
   saved uid (whom kill -1 as `uid` may signal). */
static int uid_has_live_processes(uid_t uid) {
    DIR *proc = opendir("/proc");
    if (proc == NULL) return 0;
    struct dirent *entry;
    int found = 0;
    char path[64], line[256];
    while (!found && (entry = readdir(proc)) != NULL) {
        int pid = atoi(entry->d_name);
        if (pid <= 0 || pid == getpid()) continue;
        snprintf(path, sizeof path, "/proc/%d/status", pid);
        FILE *status = fopen(path, "re");
        if (status == NULL) continue;
        int zombie = 0;
        unsigned real = 0, effective = 0, saved = 0;
        int has_uid = 0;
        while (fgets(line, sizeof line, status) != NULL) {
            if (strncmp(line, "State:", 6) == 0) zombie = strchr(line, 'Z') != NULL;
            if (sscanf(line, "Uid: %u %u %u", &real, &effective, &saved) == 3) {
                has_uid = 1;
                break;
            }
        }
        fclose(status);
        found = has_uid && !zombie && (real == uid || effective == uid || saved == uid);
    }
    closedir(proc);
    return found;
}

/*
 * Without namespaces a process can leave the program's group (setsid) and outlive the
 * run, or leave System V IPC objects and keys behind for the next run of the slot. The
 * slot's uid is the slot's alone, so a child that becomes it and kills "every process
 * it may signal" (kill -1) ends exactly the run's leftovers, then removes what the uid
 * owns in IPC and its keyring. Files it left are the service's to sweep (slots.py).
 */
static void sweep_uid(void) {
    pid_t child = fork();
    if (child < 0) return;
    if (child == 0) {
        if (setgroups(0, NULL) != 0 || setgid((gid_t)cfg.gid) != 0 || setuid((uid_t)cfg.uid) != 0)
            _exit(1);
        /* kill -1 says nothing of whom it reached: look until none of ours is alive. */
        for (int round = 0; round < 1000; round++) {
            kill(-1, SIGKILL);
            if (!uid_has_live_processes((uid_t)cfg.uid)) break;
            usleep(1000);
        }
        remove_ipc("/proc/sysvipc/shm", 0);
        remove_ipc("/proc/sysvipc/sem", 1);
        remove_ipc("/proc/sysvipc/msg", 2);
        syscall(SYS_keyctl, KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING);
        _exit(0);
    }
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
}

static void run_plain(void) {
    pid_t program;
    int failure = start_program(&program);
    if (failure != 0) {
        report_start_error(failure);
        return;
    }
    guard_run(program);
    close_stdio();
    char line[64];
    snprintf(line, sizeof line, "pid %d\n", (int)program);
    report(line);
    siginfo_t info;
    while (waitid(P_PID, (id_t)program, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {}
    kill(-program, SIGKILL); /* nothing the program forked into its group outlives it */
    int status = 0;
    struct rusage usage;
    while (wait4(program, &status, 0, &usage) < 0 && errno == EINTR) {}
    if (cfg.sweep && cfg.uid >= 0) sweep_uid();
    report_exit(status, &usage);
}

static int parse(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *option = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(option, "--") == 0) {
            cfg.argv = &argv[i + 1];
            return i + 1 < argc || cfg.deferred ? 0 : -1;
        }
#define NUMBER(name, field)                                           \
    if (strcmp(option, name) == 0 && has_value) {                     \
        cfg.field = strtoll(argv[++i], NULL, 10);                     \
        continue;                                                     \
    }
        NUMBER("--status-fd", status_fd)
        NUMBER("--as", as)
        NUMBER("--fsize", fsize)
        NUMBER("--nofile", nofile)
        NUMBER("--stack", stack)
        NUMBER("--nproc", nproc)
        NUMBER("--uid", uid)
        NUMBER("--gid", gid)
        NUMBER("--disk", disk)
        NUMBER("--output-bytes", output_bytes)
        NUMBER("--deadline-ms", deadline_ms)
        NUMBER("--wall-ms", wall_ms)
#undef NUMBER
        if (strcmp(option, "--cpu") == 0 && i + 2 < argc) {
            cfg.cpu_soft = strtoll(argv[++i], NULL, 10);
            cfg.cpu_hard = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(option, "--workdir") == 0 && has_value) {
            cfg.workdir = argv[++i];
        } else if (strcmp(option, "--ro") == 0 && has_value && cfg.ro_count < MAX_LIST) {
            cfg.ro[cfg.ro_count++] = argv[++i];
        } else if (strcmp(option, "--cgroup") == 0 && has_value && cfg.cgroup_count < MAX_LIST) {
            cfg.cgroups[cfg.cgroup_count++] = argv[++i];
        } else if (strcmp(option, "--namespaces") == 0) {
            cfg.namespaces = 1;
        } else if (strcmp(option, "--userns") == 0) {
            cfg.userns = 1;
        } else if (strcmp(option, "--output") == 0 && has_value && cfg.output_count < MAX_LIST) {
            cfg.outputs[cfg.output_count++] = argv[++i];
        } else if (strcmp(option, "--sweep-uid") == 0) {
            cfg.sweep = 1;
        } else if (strcmp(option, "--deferred") == 0) {
            cfg.deferred = 1;
        } else if (strcmp(option, "--no-seccomp") == 0) {
            cfg.no_seccomp = 1;
        } else {
            return -1;
        }
    }
    return -1;
}

/* The options, NUL-separated, from `fd` (argv-style: a leading name is skipped). */
static int parse_from_fd(int fd) {
    size_t size = 0, room = 65536;
    char *text = malloc(room);
    ssize_t n;
    while (text != NULL && (n = read(fd, text + size, room - size - 1)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        size += (size_t)n;
        if (size + 1 == room) text = realloc(text, room *= 2);
    }
    close(fd);
    if (text == NULL) return -1;
    text[size] = '\0';
    int count = 1;
    for (size_t i = 0; i < size; i++) count += text[i] == '\0';
    char **args = calloc((size_t)count + 2, sizeof *args);
    if (args == NULL) return -1;
    int argc = 0;
    args[argc++] = "dcodex-exec";
    for (size_t at = 0; at < size; at += strlen(text + at) + 1) args[argc++] = text + at;
    args[argc] = NULL;
    return parse(argc, args);
}

int main(int argc, char **argv) {
    clock_gettime(CLOCK_MONOTONIC, &started);
    /* Out of the OOM killer's way where we may be (CAP_SYS_RESOURCE): the reaper has it
       too. The program gets 1000: it is always the first choice. */
    write_text("/proc/self/oom_score_adj", "-1000");
    int parsed = argc == 3 && strcmp(argv[1], "--config-fd") == 0
                     ? parse_from_fd(atoi(argv[2]))
                     : parse(argc, argv);
    if (parsed != 0 || cfg.status_fd < 0 || (cfg.namespaces && !cfg.workdir) ||
        (cfg.deferred && !cfg.namespaces)) {
        fprintf(stderr, "usage: dcodex-exec --status-fd N [OPTION...] -- ARGV...\n");
        return 2;
    }
    signal(SIGUSR1, SIG_IGN); /* only the reaper acts on it */
    /* A reaper already gone when we give it the go: a failed write, not our death (the
       program gets every disposition back to the default). */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction on_alarm = {.sa_handler = end_run};
    sigemptyset(&on_alarm.sa_mask);
    sigaction(SIGALRM, &on_alarm, NULL);
    supervisor = getppid();
    prctl(PR_SET_PDEATHSIG, SIGALRM); /* a supervisor killed -9 ends the run too */
    if (cfg.namespaces) {
        run_namespaced();
    } else {
        run_plain();
    }
    return 0;
}

/* --- the zygote's entry (built as a shared library too, see zygote.py) ---------------- */

/*
 * A pre-initialised interpreter (the zygote) starts each run by calling dcodex_start
 * with the run's descriptors (stdin, stdout, stderr, status, options). It clones the
 * run's reaper straight into fresh namespaces, as a cold run's outer helper does, maps
 * its uid and reports its pid; the zygote itself never reads the options. The reaper
 * takes the run's descriptors onto 0-4 and nothing else of the zygote's, reads the
 * options and goes on exactly as a cold run's reaper (new root, cgroups, the program's
 * fork with every layer: uid, rlimits, keyrings, no_new_privs, seccomp, RLIMIT_AS).
 * Only the last step differs: the program does not exec a new interpreter but returns
 * from dcodex_start into the one it was forked from, after doing what exec would
 * (close-on-exec descriptors closed, signal handlers as the interpreter had them,
 * dumpable again). The reaper _exits here.
 *
 * Without an outer helper a run costs one copy of the interpreter's address space
 * fewer. What the outer helper did besides is done by others: the zygote maps the uid
 * and reports the pid; the reaper arms the wall-clock backstop itself (ending its
 * namespace by leaving, as the outer helper's SIGKILL did); the reaper dies with the
 * zygote, which dies with the runner.
 */
#include <setjmp.h>

#define ZYGOTE_API __attribute__((visibility("default")))

static sigjmp_buf back_to_interpreter;
static struct sigaction interpreter_handlers[NSIG];

static void close_if_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC)) close(fd);
}

/* The open descriptors from 3 up, as listed in the run's own /proc (0: complete). */
static int open_descriptors(int *fds, int capacity, int *count) {
    DIR *listing = opendir("/proc/self/fd");
    if (listing == NULL) return -1;
    int own = dirfd(listing), complete = 0;
    struct dirent *entry;
    *count = 0;
    while (complete == 0 && (entry = readdir(listing)) != NULL) {
        int fd = atoi(entry->d_name);
        if (fd < 3 || fd == own) continue;
        if (*count == capacity) complete = -1;
        else fds[(*count)++] = fd;
    }
    closedir(listing);
    return complete;
}

/* Close what exec would: every descriptor marked close-on-exec (the reaper's handles
   on /box and on the host's work directory among them). Those open are listed first:
   asking each of 1,021 numbers was a tenth of a millisecond of system calls per run,
   each through the seccomp filter. Without a listing, every number is asked. */
static void close_cloexec_descriptors(void) {
    int fds[256], count = 0;
    if (open_descriptors(fds, 256, &count) == 0) {
        for (int index = 0; index < count; index++) close_if_cloexec(fds[index]);
        return;
    }
    for (int fd = 3; fd < 1024; fd++) close_if_cloexec(fd);
}

static void resume_in_interpreter(void) {
    close(exec_error_fd); /* the reaper takes EOF for "started", as after an exec */
    exec_error_fd = -1;
    /* The uid change made us undumpable; a new program image would be dumpable again.
       First, so that our own /proc/self/fd is ours to list; nothing of the run but the
       reaper is alive yet to look at it in the meantime. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    close_cloexec_descriptors();
    for (int signal_number = 1; signal_number < NSIG; signal_number++)
        sigaction(signal_number, &interpreter_handlers[signal_number], NULL);
    siglongjmp(back_to_interpreter, 1);
}

static void descriptors_failed(int status_fd) {
    char line[64];
    snprintf(line, sizeof line, "error %d descriptors\n", errno);
    report_to(status_fd, line);
    _exit(0);
}

/* The run's descriptors onto 0-4, and nothing else. Each is first copied above 4, to a
   number no other holds (F_DUPFD never replaces one): they may be anywhere, 0-4 too. */
static void take_run_descriptors(const int *fds) {
    int moved[5];
    for (int index = 0; index < 5; index++)
        if ((moved[index] = fcntl(fds[index], F_DUPFD, 5)) < 0) descriptors_failed(fds[3]);
    for (int index = 0; index < 5; index++)
        if (dup2(moved[index], index) < 0) descriptors_failed(moved[3]);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 5, ~0U, 0) == 0) return;
#endif
    for (int fd = 5; fd < 1024; fd++) close(fd);
}

/* Pid 1 leaving ends every process of its namespace, whatever their uid (the kernel
   kills them): no capability needed, where kill(-1) needs CAP_KILL for the program's
   uid. The runner reports the run as ended by SIGKILL. */
static void end_namespace(int signal_number) {
    (void)signal_number;
    kill(-1, SIGKILL);
    _exit(0);
}

/* The wall clock's backstop, should the runner not end the run (a cold run's outer
   helper arms it, and SIGKILLs its reaper): the namespace ends. */
static void arm_wall_backstop(void) {
    if (cfg.wall_ms <= 0) return;
    struct sigaction on_alarm = {.sa_handler = end_namespace};
    sigemptyset(&on_alarm.sa_mask);
    sigaction(SIGALRM, &on_alarm, NULL);
    start_wall_timer(cfg.wall_ms);
}

/* The reaper of a zygote's run, just cloned: never returns (its program does, from
   dcodex_start, by resume_in_interpreter). */
static void become_zygotes_reaper(const int *fds, int go[3], int userns) {
    await_go(go);
    take_run_descriptors(fds);
    clock_gettime(CLOCK_MONOTONIC, &started);
    if (parse_from_fd(4) != 0 || cfg.status_fd != 3 || !cfg.namespaces || !cfg.workdir ||
        cfg.userns != userns) {
        errno = EINVAL;
        cfg.status_fd = 3;
        setup_failed("options");
    }
    arm_wall_backstop();
    enter_run_cgroups();
    run_as_reaper();
}

/* What dcodex_start returns for a run it could not start: never 0 (the program's). */
static int failure(int error) { return -(error > 0 ? error : EIO); }

/* In the zygote: start the run with these stdin, stdout, stderr, status and options
   descriptors, with a user namespace or not. Returns the reaper's pid (its "pid" report
   written), -errno when it could not be started, and 0 in the run's program. */
ZYGOTE_API int dcodex_start(int stdin_fd, int stdout_fd, int stderr_fd, int status_fd,
                            int options_fd, int userns) {
    const int fds[5] = {stdin_fd, stdout_fd, stderr_fd, status_fd, options_fd};
    for (int signal_number = 1; signal_number < NSIG; signal_number++)
        sigaction(signal_number, NULL, &interpreter_handlers[signal_number]);
    if (sigsetjmp(back_to_interpreter, 0) != 0) return 0;
    resume_program = resume_in_interpreter;
    int go[3];
    if (open_go(go) != 0) return failure(errno);
    pid_t child = (pid_t)syscall(SYS_clone, reaper_clone_flags(userns) | SIGCHLD, NULL, NULL,
                                 NULL, NULL);
    if (child == 0) become_zygotes_reaper(fds, go, userns);
    int error = errno;
    close_parents_go(go);
    if (child < 0) {
        close(go[GO_WRITE]);
        return failure(error);
    }
    if (userns && mapped_user(child) != NULL) { /* the run goes the cold way */
        error = errno;
        kill(child, SIGKILL);
        close(go[GO_WRITE]);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
        return failure(error);
    }
    setpgid(child, child);
    char line[64];
    snprintf(line, sizeof line, "pid %d\n", (int)child);
    report_to(status_fd, line);
    give_go(go);
    return (int)child;
}

/* In the program: its argv, from the options (the zygote itself never sees a run's
   arguments: what one run sent it, a later one could find in its memory). */
ZYGOTE_API char **dcodex_program_argv(void) { return cfg.argv; }

/* The zygote itself dies with the runner that started it (0, else -1: it is gone). Out
   of the OOM killer's way where it may be, as a cold run's helper: its reapers are its
   clones. */
ZYGOTE_API int dcodex_zygote_init(int runner_pid) {
    write_text("/proc/self/oom_score_adj", "-1000");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return -1;
    compile_filter();
    return getppid() == runner_pid ? 0 : -1;
}
