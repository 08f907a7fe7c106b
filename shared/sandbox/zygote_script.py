"""The Python zygote: an interpreter started once, forked into a fresh sandbox per run.

This file runs as `python3 -u -c BOOT SCRIPT_FD CONTROL_FD LIBRARY_FD RUNNER_PID` (BOOT
reads it from SCRIPT_FD and runs it in `__main__`) under the
system interpreter with the environment of a sandboxed Python run; it is never
imported (see `zygote.py`). Start-up is exactly that of `python3 -u main.py`; it then
loads the helper library (from a memory file: no host path shows in /proc/self/maps)
and serves requests on its control socket (SOCK_SEQPACKET): a run's stdin, stdout,
stderr, status and options descriptors, nothing else of it ("run", or "run userns"
for a run with a user namespace). Per request it calls `dcodex_start`
(sandbox_exec.c), which clones the run's reaper into fresh namespaces; the reaper
builds the sandbox exactly as a cold run's does, and its program returns from that
call into this interpreter, which then runs the script as `python3 -u main.py` would.
The zygote answers with a pidfd of the reaper (whose reports go to the status
descriptor), and reaps it when it ends.

Only the standard library, and nothing of it left behind for the program: the modules
imported here are dropped from `sys.modules` before the program runs, and `__main__`
is emptied.
"""

import os
import sys

# What start-up alone imported: the program finds exactly these (and no importer cache
# entry of ours), as in a fresh `python3 -u main.py`.
_BASELINE = (frozenset(sys.modules), frozenset(sys.path_importer_cache))

import array  # noqa: E402, F401  (`socket.recv_fds` imports it: here, before the freeze)
import ctypes  # noqa: E402  (after the baseline: dropped again before the program runs)
import gc  # noqa: E402
import signal  # noqa: E402  (start-up imported it: in the baseline)
import socket  # noqa: E402

TYPE_CHECKING = False  # mypy takes it for typing's
if TYPE_CHECKING:
    from types import MappingProxyType

    # Defined ahead of this script, in the same text (`zygote.py`).
    from dcodex.shared.sandbox.quick_exit_script import _dcodex_flush_io, _dcodex_leave


def _as_started_with_default_signals() -> None:
    """Dispositions and mask as a `python3` started with every signal at its default
    has them (the cold run's helper resets what it inherited): the runner may have been
    started with some ignored (in the background SIGINT and SIGQUIT, under nohup SIGHUP),
    and its children, this zygote among them, inherit that."""
    python_sets: dict[int, signal._HANDLER] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGPIPE: signal.SIG_IGN,
        signal.SIGXFSZ: signal.SIG_IGN,
    }
    for number in signal.valid_signals():
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            try:  # noqa: SIM105  (contextlib is not among start-up's modules)
                signal.signal(number, python_sets.get(number, signal.SIG_DFL))
            except (OSError, ValueError):
                pass  # one the C library keeps for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


_as_started_with_default_signals()

_Task = tuple[str, str, list[str]]


def _dcodex_zygote() -> _Task | None:
    control = socket.socket(fileno=int(sys.argv[2]))
    library_fd, runner_pid = int(sys.argv[3]), int(sys.argv[4])
    # PyDLL: the GIL stays held across the call, which forks and returns in the program.
    library = ctypes.PyDLL(f"/proc/self/fd/{library_fd}")
    os.close(library_fd)
    start = library.dcodex_start
    start.argtypes = [ctypes.c_int] * 6
    program_argv = library.dcodex_program_argv
    program_argv.restype = ctypes.POINTER(ctypes.c_char_p)
    if library.dcodex_zygote_init(runner_pid) != 0:
        raise SystemExit(1)  # the runner is gone already
    control.settimeout(1.0)  # to reap children now and then, requests or not
    # Done here once for every child, rather than by each: what a child does writes to
    # pages it shares with us, a copy-on-write fault each (about 200 for these).
    _as_deep_as_a_cold_start()
    libc = _libc()
    _never_freed()
    # The first `compile()` in a process builds the `ast` module's 100-odd node types
    # (the source is checked for being a tree), about 80 pages and 0.6 ms: here once.
    compile(_WARM_UP, "<warm-up>", "exec", dont_inherit=True)
    _freeze()
    control.send(b"ready")
    stopping = False
    while True:
        _reap(block=stopping)
        if stopping:
            return None
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 16, 5)
        except TimeoutError:
            continue
        if not message:
            # The runner retires us: the runs in flight end first (their helpers would
            # die with us), then we go.
            stopping = True
            continue
        if len(fds) != 5 or message not in (b"run", b"run userns"):
            _close(fds)
            control.send(b"error request")
            continue
        # The run's reaper, cloned into its namespaces (its pid reported); 0 in the
        # program, which the reaper forked with every layer on, returning here.
        pid = start(*fds, message == b"run userns")
        if pid == 0:
            control.detach()  # the reaper kept only the run's descriptors, on 0-4
            task = _task(program_argv)
            _show_the_programs_command_line(libc, task)
            if task[0] == "code":
                _unshare_memory()
            return task
        try:
            if pid < 0:
                control.send(b"error " + os.strerror(-pid).encode())
                continue
            pidfd = os.pidfd_open(pid)
            socket.send_fds(control, [b"ok"], [pidfd])
            os.close(pidfd)
        finally:
            _close(fds)


_FROZEN_NAMESPACES: "tuple[MappingProxyType[str, object], ...]" = ()
# Compiled once in the zygote, for what the first compilation sets up.
_WARM_UP = """
import sys
def greet(name: str, times: int = 1) -> str:
    return f"Hello, {name}!" * times
for line in sys.stdin:
    print(greet(line.strip()), [n * 2 for n in range(3)], {"k": (1, 2.5, None)})
"""


def _freeze() -> None:
    """Move every object of ours into the collector's permanent generation (what
    `gc.freeze()` is for, before a fork): the quick exit's `gc.get_objects()` then
    lists only what a run made, and writes to none of the pages a child shares with
    us. Listing them all cost each run some 200 copy-on-write faults, about 1 ms.
    The namespaces of the classes whose instances it no longer sees are kept, for it
    to check for a finaliser a program gave one: the interpreter's own classes cannot
    change, only those made in Python (heap types), and those with a finaliser already
    have had theirs looked at (a run's instances of them are seen). Views made here:
    looking through them in a child writes to their few pages, not to the classes'."""
    global _FROZEN_NAMESPACES
    heap_type = 1 << 9  # Py_TPFLAGS_HEAPTYPE
    namespace = type.__dict__["__dict__"].__get__
    _FROZEN_NAMESPACES = tuple(
        namespace(kind)
        for kind in gc.get_objects()
        if isinstance(kind, type)
        and kind.__flags__ & heap_type
        and "__del__" not in namespace(kind)
    )
    gc.freeze()


class _MemoryMap(ctypes.Structure):
    """struct prctl_mm_map (linux/prctl.h)."""

    _fields_ = [
        *((name, ctypes.c_uint64) for name in (
            "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
            "start_stack", "arg_start", "arg_end", "env_start", "env_end", "auxv")),
        ("auxv_size", ctypes.c_uint32),
        ("exe_fd", ctypes.c_uint32),
    ]  # fmt: skip


def _libc() -> ctypes.CDLL:
    """The C library's functions `_show_the_programs_command_line` calls, typed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.sbrk.argtypes = [ctypes.c_ssize_t]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                           ctypes.c_ulong]  # fmt: skip
    return libc


def _show_the_programs_command_line(libc: ctypes.CDLL, task: _Task) -> None:
    """/proc/PID/cmdline of the program: its own argv, as a cold run's shows it, not the
    zygote's. PR_SET_MM_MAP (checkpoint/restore's way, no capability needed) points the
    kernel at a copy; where the kernel refuses, the zygote's shows."""
    mode, target, args = task
    argv = [sys.executable, "-u", *(["-c"] if mode == "code" else []), target, *args]
    line = b"".join(os.fsencode(part) + b"\0" for part in argv)
    start = libc.malloc(len(line))  # never freed: the kernel reads it as long as we live
    if not start:
        return
    ctypes.memmove(start, line, len(line))
    with open("/proc/self/stat", "rb") as stat:
        fields = [int(value) for value in stat.read().rsplit(b")", 1)[1].split()[1:]]
    # Fields 26-28 and 45-51 of proc(5) (the list starts at field 4).
    code, stack, data = fields[22:24], fields[24], fields[41:48]
    brk = libc.sbrk(0) or data[2]
    memory = _MemoryMap(code[0], code[1], data[0], data[1], data[2], brk, stack, start,
                        start + len(line), data[5], data[6], 0, 0, 0xFFFFFFFF)  # fmt: skip
    set_mm, set_mm_map = 35, 14  # PR_SET_MM, PR_SET_MM_MAP
    libc.prctl(set_mm, set_mm_map, ctypes.addressof(memory), ctypes.sizeof(memory), 0)


def _task(program_argv: "ctypes._NamedFuncPointer") -> _Task:
    """What to run, from the program's argv in its options (read by the helper's code
    in this child, `program_argv`: the zygote never holds a run's arguments)."""
    pointer = program_argv()
    argv: list[str] = []
    while (item := pointer[len(argv)]) is not None:
        argv.append(os.fsdecode(item))
    # The interpreter and its flags, as this zygote was started: `python3 -u`.
    script = argv[sys.orig_argv.index("-c") :]
    if script[0] == "-c":
        return "code", script[1], script[2:]
    return "file", script[0], script[1:]


def _unshare_memory() -> None:
    """Copy now every page this child shares with the zygote, rather than one fault at a
    time while its program runs: for a warm sandbox (mode "code", the loader), which
    waits for its run, so that the run does not pay the copies (some 600 faults), nor
    the faults that map the interpreter's code again.
    MADV_POPULATE_WRITE (Linux 5.14) breaks copy-on-write of a whole mapping at once;
    where the kernel lacks it, the faults come later as before."""
    populate_read, populate_write = 22, 23
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) > 5 and fields[5].startswith("[v"):
                continue  # the kernel's vvar/vsyscall pages
            start, end = (int(part, 16) for part in fields[0].split("-"))
            if fields[1] == "rw-p":
                madvise(start, end - start, populate_write)
            elif fields[1].startswith("r"):
                # Mapped in the zygote, not yet in this child (fork leaves file pages
                # to fault in again): the interpreter's code, say.
                madvise(start, end - start, populate_read)


def _never_freed() -> None:
    """Keep what is ours alive to the end, with a reference no child drops: the program
    will not find it (it leaves `sys.modules` in `_dcodex_run`), and freeing it would
    write to every page it lies on, each a copy-on-write fault of the zygote's memory
    (about a millisecond per run)."""
    keep = ctypes.pythonapi.Py_IncRef
    keep.argtypes = [ctypes.py_object]
    modules = _BASELINE[0]
    for name, module in list(sys.modules.items()):
        if name not in modules:
            keep(module)


def _as_deep_as_a_cold_start() -> None:
    """The program's code runs a few frames deep here (ours, and `exec`), at the top in
    a cold run: give it the recursion depth a cold start has (`RecursionError` at the
    same depth, `sys.getrecursionlimit()` unchanged). CPython 3.11 keeps the count in
    its thread state, after three pointers and two ints; it is only touched where the
    limit is found where it should be. Called in the zygote, from the frame that forks:
    the count goes to every child, each as deep there as the zygote was."""
    if sys.version_info[:2] != (3, 11) or sys.implementation.name != "cpython":
        return
    get_state = ctypes.pythonapi.PyThreadState_Get
    get_state.restype = ctypes.c_void_p
    state = get_state()
    if not state:
        return
    offset = 3 * ctypes.sizeof(ctypes.c_void_p) + 2 * ctypes.sizeof(ctypes.c_int)
    remaining = ctypes.c_int.from_address(state + offset)
    limit = ctypes.c_int.from_address(state + offset + ctypes.sizeof(ctypes.c_int))
    if limit.value != sys.getrecursionlimit() or not 0 < remaining.value < limit.value:
        return
    # This frame is one deeper than `_dcodex_run`'s; the program's module frame, one
    # `exec` below that, counts as the first level in a cold run.
    depth = limit.value - remaining.value
    remaining.value += depth - 1


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _reap(*, block: bool) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _dcodex_run(mode: str, target: str, args: list[str]) -> None:
    """Run as `python3 -u TARGET ARGS` would (mode "file"), or `python3 -u -c TARGET
    ARGS` (mode "code": a warm sandbox's loader)."""
    # Local names: `__main__`, which holds ours, is emptied for the program below.
    import os
    import sys

    # Builtins of our own too: what runs here after the program looks its globals up in
    # the program's (a program may well have an `any` or a `type` of its own).
    from builtins import (  # noqa: UP029  (the point: not looked up in the program's globals)
        BaseException,
        KeyboardInterrupt,
        SystemExit,
        any,
        int,
        isinstance,
        type,
    )

    modules, importers = _BASELINE
    leave, flush_io, frozen = _dcodex_leave, _dcodex_flush_io, _FROZEN_NAMESPACES
    collector = sys.modules["gc"]  # `_freeze` imported it
    unfreeze, listed = collector.unfreeze, collector.get_objects
    for module in [module for module in sys.modules if module not in modules]:
        del sys.modules[module]
    # Start-up ran outside the sandbox: what it imported from a file the sandbox does
    # not show (Debian's sitecustomize, under /etc) a cold run could not have imported.
    for module, value in list(sys.modules.items()):
        file = getattr(value, "__file__", None)
        if isinstance(file, str) and not os.path.exists(file):
            del sys.modules[module]
    for entry in [entry for entry in sys.path_importer_cache if entry not in importers]:
        del sys.path_importer_cache[entry]
    builtins = sys.modules["builtins"]
    main = sys.modules["__main__"].__dict__
    main.clear()
    # The names, in the order, of a cold start's `__main__`.
    main.update(__name__="__main__", __doc__=None, __package__=None)
    if mode == "code":
        # A warm sandbox's loader ends its program with a quick exit of its own, which
        # knows nothing of the freeze (and its child has copied every page already).
        unfreeze()
        sys.argv[:] = ["-c", *args]
        sys.orig_argv[:] = [sys.executable, "-u", "-c", target, *args]
        sys.path[0] = ""
        main.update(__loader__=sys.modules["_frozen_importlib"].BuiltinImporter, __spec__=None,
                    __annotations__={}, __builtins__=builtins)  # fmt: skip
        path, source = "<string>", os.fsencode(target)
    else:
        path = os.path.join(os.getcwd(), target)
        sys.path_importer_cache[path] = None  # as `python3 main.py` leaves it: no importer
        sys.argv[:] = [target, *args]
        sys.orig_argv[:] = [sys.executable, "-u", target, *args]
        sys.path[0] = os.path.dirname(path)
        loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
        main.update(__loader__=loader, __spec__=None, __annotations__={},
                    __builtins__=builtins, __file__=path, __cached__=None)  # fmt: skip
        try:
            with open(path, "rb") as file:
                source = file.read()
            del file  # closed, but a finaliser's object: the quick exit would not be taken
        except OSError as error:
            print(f"{sys.executable}: can't open file {path!r}: [Errno {error.errno}] "
                  f"{error.strerror}", file=sys.stderr)  # fmt: skip
            raise SystemExit(2) from None
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        sys.excepthook(type(error), error.with_traceback(None), None)
        raise SystemExit(1) from None
    del source
    # A warm sandbox's loader (mode "code") ends its program itself.
    ending = mode == "file"
    streams = (sys.stdin, sys.stdout, sys.stderr)
    # Made just before the program: the collector lists it, unless the program froze
    # what there was (`gc.freeze()`), which the quick exit then cannot see.
    marker: list[None] = []
    try:
        try:
            exec(code, main)
        finally:
            if ending:
                flush_io()
    except SystemExit as exit:
        status = exit.code
        if ending and (status is None or (type(status) is int and 0 <= status < 256)):
            del exit
            leave(status or 0, streams, frozen, marker)
        raise
    except BaseException as error:
        # The program's frames only, as `python3 main.py` shows them.
        traceback = error.__traceback__
        error = error.with_traceback(traceback.tb_next if traceback else None)
        sys.excepthook(type(error), error, error.__traceback__)
        if isinstance(error, KeyboardInterrupt):
            import signal

            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1) from None
    else:
        if ending:
            leave(0, streams, frozen, marker)
    finally:
        # Not left quickly: the interpreter's finalisation runs over every object, as in
        # a cold run (it never collects frozen ones: a module's cycle would stay), unless
        # the program froze more itself (then, as in a cold run, everything stays so).
        try:
            froze_itself = not any(item is marker for item in listed())
        except BaseException:
            froze_itself = False  # no memory left to list them: thaw, as for most
        if not froze_itself:
            unfreeze()


_DCODEX_TASK = _dcodex_zygote()
if _DCODEX_TASK is not None:
    _dcodex_run(*_DCODEX_TASK)
