"""`dcodex bus` driven as a user would: a subprocess against the running stack.

Each test starts the real command line (`python -m dcodex.shared.cli.main bus ...`) and checks
what it prints and its exit code. Rich wraps long lines at the terminal width (80 columns
when output is piped), so the checks look at the output with its whitespace collapsed.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceProcesses, dcodex_argv

pytestmark = pytest.mark.bus

ROOT = Path(__file__).resolve().parent.parent
HELLO = "examples/python/01_hello_world.py"
STDIN_C = "examples/c/07_stdin_input.c"
NOWHERE = "nats://127.0.0.1:1"  # nothing listens on port 1
TIMEOUT_S = 60


def user_env(**extra: str) -> dict[str, str]:
    """The caller's environment without what would change rich's output or the server."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DCODEX_NATS_URL", "FORCE_COLOR", "COLUMNS", "LINES")
    }
    return {**env, **extra}


def dcodex(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dcodex_argv(*args),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env=env if env is not None else user_env(),
    )


def bus(server: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`dcodex bus --server SERVER ARGS...`."""
    return dcodex("bus", "--server", server, *args, cwd=cwd)


def flat(text: str) -> str:
    """`text` with every run of whitespace (including rich's line wrapping) as one space."""
    return " ".join(text.split())


def shown(completed: subprocess.CompletedProcess[str]) -> str:
    """Everything a command printed, for assertion messages."""
    return (
        f"exit {completed.returncode}\n--- stdout\n{completed.stdout}\n"
        f"--- stderr\n{completed.stderr}"
    )


def assert_no_traceback(completed: subprocess.CompletedProcess[str]) -> None:
    both = completed.stdout + completed.stderr
    assert "Traceback" not in both, shown(completed)


def unique_program(directory: Path, name: str = "prog.py", text: str = "unique") -> Path:
    """A Python file no earlier run has sent, so its first run is a cache miss."""
    token = uuid.uuid4().hex
    path = directory / name
    path.write_text(f"# {token}\nprint({text!r}, {token!r})\n")
    return path


def json_documents(text: str) -> list[dict[str, Any]]:
    """One JSON object per line, as `--json` promises."""
    documents = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(document, dict) for document in documents), documents
    return documents


def table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the rich tables in `text`, keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


# ------------------------------------------------------------------ running files


def test_run_a_file_prints_output_verdict_and_cache(stack: ServiceProcesses) -> None:
    completed = bus(stack.url, "run", "--file", HELLO)
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert "Hello, World!" in out
    assert f"{HELLO} (python)" in out, "the language comes from the .py extension"
    assert re.search(r"\bok exit 0 cpu \d+ ms wall \d+ ms mem [\d.]+ MiB cache (hit|miss)", out), (
        shown(completed)
    )
    assert "runs:" not in out, "a single run has no summary line"
    assert_no_traceback(completed)


def test_stdin_escapes_typed_on_the_command_line_are_newlines(stack: ServiceProcesses) -> None:
    completed = bus(stack.url, "run", "-f", STDIN_C, "--stdin", r"Ada\n3 4 5\n")
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert "Hello, Ada!" in out, "the name is the first line, without a literal \\n"
    assert "You gave 3 number(s); their sum is 12" in out
    assert f"{STDIN_C} (c)" in out
    assert re.search(r"\bok exit 0 .* compile \d+ ms cache (hit|miss)", out), shown(completed)


def test_stdin_file_is_passed_verbatim(stack: ServiceProcesses, tmp_path: Path) -> None:
    stdin = tmp_path / "input.txt"
    # A backslash in a file is data, not an escape: only --stdin text is unescaped.
    stdin.write_text("Gr\\nace\n10 20 30\n")
    completed = bus(stack.url, "run", "-f", STDIN_C, "--stdin-file", str(stdin))
    assert completed.returncode == 0, shown(completed)
    assert "Hello, Gr\\nace!\n" in completed.stdout
    assert "You gave 3 number(s); their sum is 60" in flat(completed.stdout)


def test_directory_with_the_examples_manifest_passes(stack: ServiceProcesses) -> None:
    completed = bus(
        stack.url, "run", "--directory", "examples/python", "--manifest", "examples/manifest.toml"
    )
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    summary = re.search(r"9 runs: ([^─]*)", out)
    assert summary, shown(completed)
    counts = summary.group(1).strip()
    assert counts == "1 cpu_time_limit, 1 memory_limit, 6 ok, 1 output_limit", counts
    assert out.count("✓") == 9 and "✗" not in out, shown(completed)
    assert "Hello, World!" in out and "found 13848 primes" in out
    # The programs' stderr (07's MemoryError traceback) is on stdout; the CLI's own is clean.
    assert "Traceback" not in completed.stderr, shown(completed)


def test_manifest_mismatch_exits_1_and_names_it(stack: ServiceProcesses, tmp_path: Path) -> None:
    shutil.copy(ROOT / HELLO, tmp_path / "hello.py")
    shutil.copy(ROOT / "examples/python/02_basic_math.py", tmp_path / "basic_math.py")
    (tmp_path / "manifest.toml").write_text(
        '["hello.py"]\nstatus = "runtime_error"\nstdout = "Goodbye"\n\n'
        '["basic_math.py"]\nstatus = "ok"\nstdout = "2 ** 100 = 1267650600228229401496703205376"\n'
    )
    completed = bus(
        stack.url, "run", "-d", ".", "--manifest", "manifest.toml", "--no-cache", cwd=tmp_path
    )
    assert completed.returncode == 1, shown(completed)
    out = flat(completed.stdout)
    assert "status ok, expected runtime_error" in out, shown(completed)
    assert "stdout lacks 'Goodbye'" in out
    assert out.count("✗") == 1 and out.count("✓") == 1, shown(completed)
    assert "2 runs: 2 ok" in out
    assert "1 of 2 runs did not match the manifest" in flat(completed.stderr)
    assert_no_traceback(completed)


# ------------------------------------------------------------------ the result cache


def test_cache_demo_second_run_is_a_hit(stack: ServiceProcesses, tmp_path: Path) -> None:
    program = unique_program(tmp_path)
    completed = bus(stack.url, "run", "-c", "-f", program.name, cwd=tmp_path)
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert re.search(r"\bok exit 0 .* cache miss total \d+ ms", out), "a new program: a miss"
    assert re.search(r"again: cache hit [\d.]+ ms vs [\d.]+ ms \(\d+x faster\)", out), shown(
        completed
    )


def test_no_cache_neither_reads_nor_writes(stack: ServiceProcesses, tmp_path: Path) -> None:
    program = unique_program(tmp_path)
    twice = bus(stack.url, "run", "--no-cache", "-c", "-f", program.name, cwd=tmp_path)
    assert twice.returncode == 0, shown(twice)
    assert "cache hit" not in flat(twice.stdout), shown(twice)
    assert "again: cache miss" in flat(twice.stdout)
    # Nothing was stored by the --no-cache runs, so a cached run still misses.
    after = bus(stack.url, "run", "-f", program.name, cwd=tmp_path)
    assert after.returncode == 0, shown(after)
    assert "cache miss" in flat(after.stdout) and "cache hit" not in flat(after.stdout)


# ------------------------------------------------------------------ --json


def test_json_prints_one_object_per_run(stack: ServiceProcesses, tmp_path: Path) -> None:
    # Brackets would be rich markup and é ✓ are not ASCII: both must reach the JSON as is.
    program = unique_program(tmp_path, text="[bold]é ✓[/bold]")
    shutil.copy(ROOT / STDIN_C, tmp_path / "stdin.c")
    files = ("-f", program.name, "-f", "stdin.c")
    completed = bus(
        stack.url, "run", "--json", "-c", *files, "--stdin", r"Ada\n1 2\n", cwd=tmp_path
    )
    assert completed.returncode == 0, shown(completed)
    documents = json_documents(completed.stdout)
    assert [d["file"] for d in documents] == [program.name] * 2 + ["stdin.c"] * 2
    assert all(d["status"] == "ok" for d in documents), documents
    first, again, compiled, _ = documents
    assert first["stdout"].startswith("[bold]é ✓[/bold] ")
    assert first["cache_hit"] is False and again["cache_hit"] is True
    assert first["language"] == "python" and compiled["language"] == "c"
    assert compiled["stdout"] == "Hello, Ada!\nYou gave 2 number(s); their sum is 3\n"
    assert {"exit_code", "stderr", "cpu_time_ms", "wall_time_ms", "peak_memory_bytes"} <= set(first)


# ------------------------------------------------------------------ languages by extension


def test_language_flag_runs_a_file_with_an_unknown_extension(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    (tmp_path / "prog.txt").write_text('print("from a .txt file")\n')
    completed = bus(stack.url, "run", "--language", "python", "-f", "prog.txt", cwd=tmp_path)
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert "from a .txt file" in out and "prog.txt (python)" in out
    assert re.search(r"\bok exit 0 ", out), shown(completed)


def test_unknown_extension_without_language_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "prog.txt").write_text('print("never runs")\n')
    # The file is checked before connecting: no server is needed for this error.
    completed = bus(NOWHERE, "run", "-f", "prog.txt", cwd=tmp_path)
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert "prog.txt" in err and "--language" in err, shown(completed)
    assert "never runs" not in completed.stdout
    assert "NATS" not in err
    assert_no_traceback(completed)


# ------------------------------------------------------------------ mistakes


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    completed = bus(NOWHERE, "run", "--file", "does_not_exist.py", cwd=tmp_path)
    assert completed.returncode != 0, shown(completed)
    err = flat(completed.stderr)
    assert "no such file: does_not_exist.py" in err, shown(completed)
    assert "--file" in err and "NATS" not in err
    assert_no_traceback(completed)


def test_no_programs_is_a_usage_error() -> None:
    completed = bus(NOWHERE, "run")
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert "Usage: " in err and "name programs to run with --file or --directory" in err
    assert_no_traceback(completed)


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    completed = bus(NOWHERE, "run", "-f", str(ROOT / HELLO), cwd=tmp_path)
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert f"no DCodeX cache service is reachable at {NOWHERE}" in err, shown(completed)
    assert "`dcodex up`" in err
    assert completed.stdout == ""
    assert_no_traceback(completed)


# ------------------------------------------------------------------ languages, ping, env


def test_languages_lists_each_with_its_version(stack: ServiceProcesses) -> None:
    completed = bus(stack.url, "languages")
    assert completed.returncode == 0, shown(completed)
    rows = table_rows(completed.stdout)
    for language, tool in (("c", "gcc"), ("cpp", "g++"), ("python", "python")):
        assert language in rows, shown(completed)
        assert re.fullmatch(rf"{re.escape(tool)} \d+(\.\d+)+", rows[language][2]), rows[language]
    assert "isolation:" in completed.stdout


def test_ping_lists_the_three_services(stack: ServiceProcesses) -> None:
    completed = bus(stack.url, "ping")
    assert completed.returncode == 0, shown(completed)
    rows = table_rows(completed.stdout)
    assert {"dcodex-cache", "dcodex-runner", "dcodex-compiler"} <= set(rows), shown(completed)


def test_server_comes_from_dcodex_nats_url(stack: ServiceProcesses) -> None:
    from_env = dcodex("bus", "run", "-f", HELLO, env=user_env(DCODEX_NATS_URL=stack.url))
    assert from_env.returncode == 0, shown(from_env)
    assert "Hello, World!" in from_env.stdout
    # --server wins over the variable.
    flag_wins = dcodex("bus", "--server", stack.url, "ping", env=user_env(DCODEX_NATS_URL=NOWHERE))
    assert flag_wins.returncode == 0, shown(flag_wins)
    assert "dcodex-runner" in flag_wins.stdout


def test_bad_input_files_are_clear_errors_before_any_run(tmp_path: Path) -> None:
    broken_manifest = tmp_path / "manifest.toml"
    broken_manifest.write_text("[oops\n")
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe\x00print(1)")
    stdin_file = tmp_path / "stdin.txt"
    stdin_file.write_text("x")
    cases = [
        (("run", "-f", HELLO, "--manifest", str(broken_manifest)), "is not valid TOML"),
        (("run", "-f", HELLO, "-f", str(binary), "-l", "python"), "is not UTF-8 text"),
        (("run", "-f", HELLO, "--stdin", "a", "--stdin-file", str(stdin_file)), "not both"),
        (("run", "-d", str(tmp_path / "empty")), "no such directory"),
        (("run", "-d", str(tmp_path)), "no source files"),
    ]
    for args, message in cases:
        completed = bus(NOWHERE, *args)
        assert completed.returncode == 2, shown(completed)
        assert message in flat(completed.stderr), shown(completed)
        assert_no_traceback(completed)


def test_up_with_an_unreachable_nats_url_is_one_clear_line() -> None:
    completed = dcodex("up", "--nats-url", NOWHERE, "--metrics-port", "0")
    assert completed.returncode == 1, shown(completed)
    assert f"no NATS server is reachable at {NOWHERE}" in completed.stderr
    assert_no_traceback(completed)


# ------------------------------------------------------------------ verdicts and exit codes


def test_a_verdict_not_ok_exits_1_after_a_summary_table(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    (tmp_path / "fine.py").write_text('print("fine")\n')
    (tmp_path / "fails.py").write_text('raise SystemExit("bad luck")\n')
    completed = bus(stack.url, "run", "-d", ".", "--no-cache", cwd=tmp_path)
    assert completed.returncode == 1, shown(completed)
    out = flat(completed.stdout)
    assert re.search(r"\bruntime_error exit 1 ", out), shown(completed)
    assert "2 runs: 1 ok, 1 runtime_error" in out
    rows = table_rows(completed.stdout)
    assert rows["ok"][1:3] == ["1", "0"], rows
    assert rows["runtime_error"][1:3] == ["1", "0"], rows
    assert rows["total"][1:3] == ["2", "0"], rows
    assert re.fullmatch(r"\d+\.\d\d s", rows["total"][3]), rows
    assert "1 of 2 runs did not end ok" in flat(completed.stderr)
    assert_no_traceback(completed)


def test_summary_counts_cache_hits_of_a_cache_demo(stack: ServiceProcesses, tmp_path: Path) -> None:
    unique_program(tmp_path, "a.py")
    unique_program(tmp_path, "b.py")
    completed = bus(stack.url, "run", "-d", ".", "-c", cwd=tmp_path)
    assert completed.returncode == 0, shown(completed)
    assert "4 runs: 4 ok" in flat(completed.stdout)
    rows = table_rows(completed.stdout)
    assert rows["ok"][1:3] == ["4", "2"], "each file once missed, once hit"
    assert rows["total"][1:3] == ["4", "2"], rows


# ------------------------------------------------------------------ --limit-*

LIMIT_FLAGS = {
    "cpu_time_s": ("--limit-cpu-time", "11"),
    "wall_time_s": ("--limit-wall-time", "31"),
    "memory_bytes": ("--limit-memory", "5G"),
    "output_bytes": ("--limit-output", "1M"),
    "processes": ("--limit-processes", "1000"),
    "file_size_bytes": ("--limit-file-size", "65M"),
}


def test_every_request_limit_has_an_option() -> None:
    from dcodex.shared.contract import Limits

    assert set(LIMIT_FLAGS) == set(Limits.model_fields)
    completed = dcodex("bus", "run", "--help")
    assert completed.returncode == 0, shown(completed)
    for flag, _ in LIMIT_FLAGS.values():
        assert flag in completed.stdout, flag


def test_each_limit_option_reaches_the_server(stack: ServiceProcesses) -> None:
    # Values just over the server's ceilings: the 400 names the field each option set.
    for field, (flag, value) in LIMIT_FLAGS.items():
        completed = bus(stack.url, "run", "-f", HELLO, flag, value)
        assert completed.returncode == 2, shown(completed)
        err = flat(completed.stderr)
        assert f"error 400: limits.{field} is" in err, shown(completed)
        assert "above the server's ceiling" in err
        assert_no_traceback(completed)


def test_limits_are_enforced_and_sizes_take_suffixes(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    (tmp_path / "spin.py").write_text("while True:\n    pass\n")
    (tmp_path / "chatty.py").write_text('print("x" * 5000)\n')
    (tmp_path / "greedy.py").write_text("block = bytearray(300 * 1024 * 1024)\nprint(len(block))\n")
    completed = bus(
        stack.url,
        "run",
        "--json",
        "--no-cache",
        *("-f", "spin.py", "-f", "chatty.py", "-f", "greedy.py"),
        *("--limit-cpu-time", "0.3", "--limit-output", "1K", "--limit-memory", "128MiB"),
        cwd=tmp_path,
    )
    assert completed.returncode == 1, shown(completed)
    spin, chatty, greedy = json_documents(completed.stdout)
    assert spin["status"] == "cpu_time_limit", spin
    assert chatty["status"] == "output_limit" and len(chatty["stdout"]) == 1024, chatty
    assert greedy["status"] == "memory_limit", greedy


def test_bad_limit_values_are_usage_errors() -> None:
    for flag, value in (
        ("--limit-memory", "lots"),
        ("--limit-cpu-time", "0"),
        ("--limit-processes", "0"),
    ):
        completed = bus(NOWHERE, "run", "-f", HELLO, flag, value)
        assert completed.returncode == 2, shown(completed)
        assert f"Invalid value for '{flag}'" in flat(completed.stderr), shown(completed)
        assert_no_traceback(completed)


# ------------------------------------------------------------------ connection options


def test_wrong_subject_prefix_names_the_missing_service(stack: ServiceProcesses) -> None:
    completed = dcodex("bus", "-s", stack.url, "--subject-prefix", "nobody", "run", "-f", HELLO)
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert f"no DCodeX cache service is reachable at {stack.url}" in err, shown(completed)
    assert "`dcodex up`" in err
    assert_no_traceback(completed)


def test_missing_key_files_are_usage_errors(tmp_path: Path) -> None:
    for flag in ("--nkey", "--creds", "--tls-ca", "--tls-cert"):
        completed = dcodex("bus", "-s", NOWHERE, flag, str(tmp_path / "absent"), "ping")
        assert completed.returncode == 2, shown(completed)
        assert f"Invalid value for '{flag}'" in flat(completed.stderr), shown(completed)
        assert "does not exist" in flat(completed.stderr)
        assert_no_traceback(completed)


# ------------------------------------------------------------------ terminals


def on_a_terminal(*args: str, cwd: Path = ROOT) -> tuple[int, str]:
    """Run `dcodex ARGS` with its stdout and stderr on a pseudo-terminal, as in a shell."""
    controller, terminal = pty.openpty()
    env = user_env(TERM="xterm-256color", COLUMNS="120")
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        dcodex_argv(*args), stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL,
        cwd=cwd, env=env,
    )  # fmt: skip
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    return process.wait(timeout=TIMEOUT_S), b"".join(chunks).decode(errors="replace")


def test_colours_and_progress_only_on_a_terminal(stack: ServiceProcesses, tmp_path: Path) -> None:
    unique_program(tmp_path, "a.py")
    unique_program(tmp_path, "b.py")
    code, screen = on_a_terminal("bus", "-s", stack.url, "run", "-d", str(tmp_path))
    assert code == 0, screen
    assert "\x1b[" in screen, "colours on a terminal"
    assert re.search(r"[0-2]/2", screen), f"a progress bar counts the runs: {screen!r}"
    assert "2 runs: 2 ok" in flat(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen))
    piped = bus(stack.url, "run", "-d", str(tmp_path))
    assert piped.returncode == 0, shown(piped)
    assert "\x1b" not in piped.stdout + piped.stderr, "no colours or cursor moves in a pipe"
    assert "2/2" not in piped.stdout, "no progress bar in a pipe"


def test_a_language_the_server_does_not_know_is_a_clear_error(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    (tmp_path / "prog.cob").write_text("DISPLAY 'HI'.\n")
    completed = bus(stack.url, "run", "-l", "cobol", "-f", "prog.cob", cwd=tmp_path)
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert "error 404:" in err and "cobol" in err, shown(completed)
    assert_no_traceback(completed)
