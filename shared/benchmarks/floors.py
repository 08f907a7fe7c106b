"""The floors: what each workload costs without DCodeX, measured in the same run.

Each floor does the same work as its workload with nothing around it: a bare
`/usr/bin/python3 main.py`, a bare `gcc -O2` then the binary, a plain `bwrap` with the
sandbox's namespaces, a bare NATS request/reply. A workload's ratio to its floor is
what the table shows, so a noisy (shared) machine moves both alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dcodex.shared.benchmarks.stats import Figures
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.bench import bwrap_argv

PYTHON = "/usr/bin/python3"

HELLO_PY = "print('Hello, World!')  # {tag}\n"
HELLO_C = '#include <stdio.h>\n/* {tag} */\nint main(void) {{ puts("Hello, World!"); return 0; }}\n'
HELLO_CPP = (
    "#include <iostream>\n// {tag}\n"
    'int main() {{ std::cout << "Hello, World!" << std::endl; return 0; }}\n'
)
# W6's program: the same binary each call, a new line of stdin each call.
ECHO_C = (
    "#include <stdio.h>\n"
    "int main(void) { char line[256];\n"
    '  if (fgets(line, sizeof line, stdin)) printf("Hello, %s", line);\n'
    "  return 0; }\n"
)


def tag() -> str:
    """Something unique to put in a program, so that no cache has seen it."""
    return uuid.uuid4().hex


Once = Callable[[], None]


@dataclass(frozen=True)
class Floor:
    """A bare run to measure beside a workload: its name and one run of it."""

    name: str
    once: Once


def _run(
    argv: list[str], cwd: Path, stdin: bytes = b"", env: dict[str, str] | None = None
) -> bytes:
    done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, env=env, check=True)
    return done.stdout


class Floors:
    """Bare runs of the workloads' programs in a scratch directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = clean_env(directory)

    def python(self) -> Floor:
        source = self.directory / "main.py"

        def once() -> None:
            source.write_text(HELLO_PY.format(tag=tag()))
            assert _run([PYTHON, "-u", "main.py"], self.directory, env=self.env).startswith(
                b"Hello"
            )

        return Floor("bare python3 hello", once)

    def python_all_cores(self, runs: int, workers: int) -> Figures:
        """`workers` loops of bare python3 at once: the throughput W5 compares with."""
        samples: list[float] = []
        lock = threading.Lock()
        per_worker = max(1, runs // workers)

        def loop(index: int) -> None:
            directory = self.directory / f"worker-{index}"
            directory.mkdir(exist_ok=True)
            for _ in range(per_worker):
                (directory / "main.py").write_text(HELLO_PY.format(tag=tag()))
                before = time.perf_counter()
                _run([PYTHON, "-u", "main.py"], directory, env=self.env)
                with lock:
                    samples.append((time.perf_counter() - before) * 1000)

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Figures(
            f"bare python3 hello, {workers} at once", samples, time.perf_counter() - started
        )

    def compile_and_run(self, compiler: str, template: str, suffix: str) -> Floor:
        source = self.directory / f"hello{suffix}"
        binary = self.directory / "hello"

        def once() -> None:
            source.write_text(template.format(tag=tag()))
            _run([compiler, "-O2", "-o", binary.name, source.name], self.directory)
            assert _run([f"./{binary.name}"], self.directory).startswith(b"Hello")

        return Floor(f"bare {compiler} -O2 + run", once)

    def echo_binary(self) -> Path:
        source = self.directory / "echo.c"
        source.write_text(ECHO_C)
        _run(["gcc", "-O2", "-o", "echo", "echo.c"], self.directory)
        return self.directory / "echo"

    def binary(self) -> Floor:
        binary = self.echo_binary()

        def once() -> None:
            assert _run([str(binary)], self.directory, tag().encode() + b"\n").startswith(b"Hello")

        return Floor("bare C binary", once)

    def bwrap(self) -> Floor | None:
        """The C binary in a plain bwrap with the sandbox's namespaces (None: no bwrap)."""
        found = shutil.which("bwrap")
        if found is None:
            return None
        binary = self.echo_binary()
        uid = 61999 if os.geteuid() == 0 else None  # a uid of its own, as a sandbox slot
        self.directory.chmod(0o755)
        argv = bwrap_argv(found, binary, self.directory, uid)
        env = clean_env(Path("/box"))

        def once() -> None:
            assert _run(argv, self.directory, tag().encode() + b"\n", env).startswith(b"Hello")

        return Floor("plain bwrap, C binary", once)


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="dcodex-bench-floors-")
