"""The end of a sandboxed Python run, as `python3 -u main.py` ends it, but quicker.

Never imported: its text runs in the sandboxed interpreter ahead of the warm loader
(`LOADER` in `warm.py`) and of the zygote's script (`zygote_script.py`). Each takes
these two functions as locals before the program's `__main__` is emptied, and calls them
once the program has run. They look up no global of their own (there is none left by
then), only builtins and what they import: modules start-up imported already.
"""

TYPE_CHECKING = False  # mypy takes it for typing's: at run time, no typing import
if TYPE_CHECKING:
    from types import MappingProxyType
    from typing import TextIO


def _dcodex_flush_io() -> None:
    """As `python3 main.py` does once the program has run (CPython's `flush_io`), and
    `python3 -c` does not: the streams the program left flushed, errors ignored."""
    import sys
    from builtins import BaseException  # not the program's: its globals are ours

    for stream in (sys.stderr, sys.stdout):
        try:  # noqa: SIM105  (contextlib is not among start-up's modules)
            stream.flush()
        except BaseException:
            pass  # as CPython's: there is nothing to report them to


def _dcodex_leave(
    status: int,
    streams: "tuple[TextIO, TextIO, TextIO]",
    frozen_namespaces: "tuple[MappingProxyType[str, object], ...]" = (),
    marker: "list[None] | None" = None,
) -> None:
    """The program is over: leave with `status` without the interpreter's finalisation
    (every module torn down, every object freed: some 4 ms) when it would show nothing,
    that is when nothing of the program's is left to run in it: no finaliser, weakref
    callback, thread, atexit function, replaced stream (`streams` are the ones it
    started with) or C library buffer. Else return, and it runs. Looked up without
    running any code of the program's (no getattr on its objects), and with builtins
    of its own: the globals of these functions are `__main__`'s, the program's.
    `frozen_namespaces`: the namespaces (`cls.__dict__`) of the classes `gc.freeze()`
    hid from `gc.get_objects()` (a zygote's, whose objects from before the fork are
    frozen), made in Python and without a finaliser then: their instances are not
    seen either, so one that gained a finaliser counts as one that has it (looked at
    through views the zygote made, so that no class's own page is written to).
    Objects the program froze itself are not seen either: then the interpreter
    finalises. `marker`, an object made just before the program, tells (it is frozen
    only if the program froze); without one, any frozen object does."""
    import atexit
    import gc
    import itertools
    import os
    import sys
    from _weakref import CallableProxyType, ProxyType, ReferenceType
    from builtins import (  # noqa: UP029  (the point: not looked up in the program's globals)
        BaseException,
        any,
        getattr,
        id,
        issubclass,
        len,
        list,
        map,
        set,
        str,
        type,
    )

    if (
        sys.stdout is not streams[1]
        or sys.stderr is not streams[2]
        or sys.flags.inspect
        or os.environ.get("PYTHONINSPECT")
        or atexit._ncallbacks()
        or (marker is None and gc.get_freeze_count())
        or gc.callbacks  # a finalisation's last collection would call them
        or "threading" in sys.modules
        or "_ctypes" in sys.modules
    ):
        return
    native = os.path.join(os.path.dirname(os.__file__), "lib-dynload", "")
    for module in list(sys.modules.values()):
        file = module.__dict__.get("__file__") if type(module) is type(sys) else 0
        if file is not None and (
            type(file) is not str or (file.endswith(".so") and not file.startswith(native))
        ):
            return  # not a module, or native code not the standard library's
    standard: set[int] = set()
    for stream in streams:
        buffer = getattr(stream, "buffer", None)
        standard.update((id(stream), id(buffer), id(getattr(buffer, "raw", None))))
    startup_finalized = ("posix", "ScandirIterator")  # start-up's own class
    own, mro = type.__dict__["__dict__"].__get__, type.__dict__["__mro__"].__get__
    module_of = type.__dict__["__module__"].__get__
    qualname_of = type.__dict__["__qualname__"].__get__
    try:
        objects = gc.get_objects()
    except BaseException:
        return  # no memory left to list them: the interpreter finalises
    if marker is not None and not any(item is marker for item in objects):
        return  # the program froze what there was: not seen here
    kinds = set(map(type, objects))

    def instances(of: set[type]) -> "itertools.compress[object]":
        return itertools.compress(objects, map(of.__contains__, map(type, objects)))

    finalized = {kind for kind in kinds if any("__del__" in own(b) for b in mro(kind))}
    if any(id(instance) not in standard for instance in instances(finalized)):
        return  # anything with a finaliser but the standard streams
    # A class's finaliser also runs for instances gc does not track (no __dict__).
    classes = instances({kind for kind in kinds if issubclass(kind, type)})
    for cls in classes:
        if "__del__" in own(cls) and (module_of(cls), qualname_of(cls)) != startup_finalized:
            return
    if any("__del__" in namespace for namespace in frozen_namespaces):
        return
    weak_types = (ReferenceType, ProxyType, CallableProxyType)
    weak = {kind for kind in kinds if issubclass(kind, weak_types)}
    if weak - {ReferenceType}:
        return  # a proxy, or a subclass of ref (KeyedRef, WeakMethod)
    function, builtin = type(instances), type(len)
    silent = {
        (builtin, "ReferenceType._destroy"),  # abc's registries
        (function, "WeakSet.__init__.<locals>._remove"),
    }
    for ref in instances(weak):
        callback = ref.__callback__  # type: ignore[attr-defined]
        if callback is None:
            continue
        kind = type(callback)
        if kind not in (builtin, function) or (kind, callback.__qualname__) not in silent:
            return
    try:
        streams[1].flush()
        streams[2].flush()
    except BaseException:
        return
    os._exit(status)
