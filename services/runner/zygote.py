"""The runner's Python zygote (`--python-zygote`): which interpreter, which environment.

The sandbox keeps it (`dcodex.shared.sandbox.zygote`); this picks the Python of the
registry (its run command up to the script, the interpreter resolved on the sandbox's
PATH as a cold run resolves it) and the environment its runs get in /box. Any limits
suit it: rlimits, uid and cgroups are set in each forked child.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from dcodex.shared.languages.registry import Registry
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR, Isolation
from dcodex.shared.sandbox.warm import python_script_run
from dcodex.shared.sandbox.zygote import ZygoteKeeper
from dcodex.shared.service.config import Settings

log = structlog.get_logger("dcodex.runner")


def open_python_zygote(
    settings: Settings, registry: Registry, isolation: Isolation
) -> ZygoteKeeper | None:
    """Start the zygote of the registry's Python (None: off, or not possible here)."""
    if not settings.python_zygote:
        return None
    if not isolation.namespaces:
        # Without namespaces a run's files and HOME are a host directory of its own,
        # which an interpreter started ahead cannot know; and the fork needs a reaper.
        log.info("python_zygote_off", reason="no namespaces")
        return None
    for language in registry.languages:
        run = language.run
        if language.compiled or not python_script_run(run, language.source):
            continue
        env = language.sandbox_env(Path(SANDBOX_WORKDIR))
        interpreter = shutil.which(run[0], path=env["PATH"])
        if interpreter is None:
            continue
        keeper = ZygoteKeeper((interpreter, *run[1:-1]), env)
        keeper.start()
        log.info("python_zygote", language=language.id, interpreter=interpreter)
        return keeper
    return None
