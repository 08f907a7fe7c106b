"""The language registry: data files, the operator's file, probing and compile options."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import DcodexError
from dcodex.shared.languages.probe import probe_registry
from dcodex.shared.languages.registry import Registry
from tests.conftest import ServiceProcesses, wait_for_subject

OPERATOR_FILE = """
# A compiled language the shipped file lacks: GNU assembler, built with gcc.
[asm]
aliases = ["gas", "s"]
extensions = [".s"]
source = "main.s"
compile = ["gcc", "-nostdlib", "-static", "{optimization}", "-o", "main", "main.s"]
binary = "main"
run = ["./main"]
version = ["as", "--version"]
version_name = "gas"
default_optimization = "none"
optimization_flags = { none = [] }

# An interpreted one.
[perl]
extensions = [".pl"]
source = "main.pl"
run = ["perl", "main.pl"]
version = ["perl", "-e", "print substr($^V, 1)"]
version_name = "perl"

# One whose toolchain is not installed: left out at start, with a log line.
[nolang]
source = "main.nl"
run = ["dcodex-no-such-toolchain", "main.nl"]
version = ["dcodex-no-such-toolchain", "--version"]
version_name = "nolang"

# A shipped one, replaced: Python answers to one more alias.
[python]
aliases = ["py", "python3", "snake"]
extensions = [".py"]
source = "main.py"
run = ["python3", "-u", "main.py"]
version = ["python3", "-c", "import platform; print(platform.python_version())"]
version_name = "python"

# And one left out.
[bash]
disabled = true
"""

# Prints "asm says hi" with two system calls, no libc.
HELLO_ASM = """
    .globl _start
    .text
_start:
    mov $1, %rax
    mov $1, %rdi
    lea msg(%rip), %rsi
    mov $12, %rdx
    syscall
    mov $60, %rax
    xor %rdi, %rdi
    syscall
    .data
msg: .ascii "asm says hi\\n"
"""


def output_of(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "languages.toml"
    path.write_text(text)
    return path


def test_shipped_registry_has_every_language_with_its_options() -> None:
    registry = Registry.load()
    ids = [lang.id for lang in registry.languages]
    assert ids == ["c", "cpp", "python", "javascript", "bash", "rust", "go", "java"]
    cpp = registry.resolve("C++")
    assert cpp.default_std == "c++17" and cpp.default_optimization == "O2"
    assert {"c++17", "c++20", "c++23"} <= {name for name, _ in cpp.std_flags}
    assert registry.resolve("node").id == "javascript" and registry.resolve("rs").id == "rust"
    assert registry.for_file(Path("x.mjs")) is registry.resolve("js")
    assert registry.resolve("golang").id == "go" and registry.for_file(Path("Main.java"))


def test_the_jvm_gets_headroom_and_its_heap_from_the_memory_limit() -> None:
    java = Registry.load().resolve("java")
    argv = java.run_argv(256 * 2**20, ["x"])
    assert "-Xmx256m" in argv and argv[-1] == "x"
    assert java.address_space(256 * 2**20) == 256 * 2**20 + 2 * 2**30
    c = Registry.load().resolve("c")
    assert c.run_argv(2**30) == ["./main"] and c.address_space(2**30) is None


def test_operator_file_adds_replaces_and_disables(tmp_path: Path) -> None:
    registry = Registry.load(write(tmp_path, OPERATOR_FILE))
    ids = [lang.id for lang in registry.languages]
    assert "bash" not in ids and {"asm", "perl", "nolang", "c", "cpp"} <= set(ids)
    assert registry.resolve("snake").id == "python"
    asm = registry.resolve("GAS")
    assert asm.compiled and asm.compile_argv(asm.options(None, None)) == [
        "gcc", "-nostdlib", "-static", "-o", "main", "main.s"
    ]  # fmt: skip
    assert registry.for_file(Path("prog.pl")) is registry.resolve("perl")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "[x]\nsource = 'a'\nrun = ['a']\nversion = ['a']\nversion_name = 'a'\ncolour = 1\n",
            "colour",
        ),
        ("[x]\nrun = ['a']\nversion = ['a']\nversion_name = 'a'\n", "source"),
        ("[x\n", "languages.toml"),
        (
            "[x]\nsource='a'\nrun=['a']\nversion=['a']\nversion_name='a'\ndefault_std='c9'\n",
            "default_std 'c9' is not one of its choices",
        ),
        (
            "[x]\nsource='a'\nrun=['a']\nversion=['a']\nversion_name='a'\naliases=['py']\n",
            "'py' names both",
        ),
        (
            "[x]\nsource='a'\nrun=['a']\nversion=['a']\nversion_name='a'\ncompile=['cc']\n",
            "compile and binary go together",
        ),
    ],
)
def test_a_bad_operator_file_is_an_error_naming_the_problem(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        Registry.load(write(tmp_path, text))


async def test_probe_leaves_out_missing_toolchains_with_a_log_line(tmp_path: Path) -> None:
    registry = Registry.load(write(tmp_path, OPERATOR_FILE))
    with capture_logs() as logs:
        probed = await probe_registry(registry)
    ids = {lang.id for lang in probed.languages}
    assert "nolang" not in ids and {"c", "cpp", "python", "asm", "perl"} <= ids
    assert [e["language"] for e in logs if e["event"] == "language_unavailable"] == ["nolang"]
    perl = output_of("perl", "-e", "print substr($^V, 1)")
    assert probed.resolve("perl").version == f"perl {perl}"


async def test_versions_are_the_toolchains_own() -> None:
    probed = await probe_registry(Registry.load())
    assert probed.resolve("javascript").version == f"node {output_of('node', '--version')}"
    assert probed.resolve("c").version == f"gcc {output_of('gcc', '-dumpfullversion')}"


def test_options_are_checked_against_the_language_allowlists() -> None:
    registry = Registry.load()
    cpp, c, python = registry.resolve("cpp"), registry.resolve("c"), registry.resolve("python")
    chosen = cpp.options("c++20", "O3")
    assert cpp.compile_argv(chosen)[:3] == ["g++", "-std=c++20", "-O3"]
    assert c.compile_argv(c.options("c23", None))[:3] == ["gcc", "-std=c2x", "-O2"]
    for language, std, optimization, field in [
        (cpp, "c++98", None, "std"),
        (cpp, "c++17 -fplugin=x", None, "std"),
        (cpp, None, "-O3", "optimization"),
        (c, "c++17", None, "std"),
        (python, "3.11", None, "std"),
        (python, None, "O2", "optimization"),
    ]:
        with pytest.raises(DcodexError) as raised:
            language.options(std, optimization)
        assert raised.value.code == 400 and raised.value.field == field


@pytest.fixture
def operator_stack(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcesses]:
    """Compiler, runner and cache under their own prefix, all given the operator's file."""
    path = write(tmp_path, OPERATOR_FILE)
    services = ServiceProcesses(
        nats_url, tmp_path, ("--subject-prefix", "oper", "--languages-file", str(path))
    )
    for name in ("compiler", "runner", "cache"):
        services.start(name)
    try:
        for subject in ("oper.compile", "oper.languages", "oper.cache.stats"):
            asyncio.run(wait_for_subject(nats_url, subject))
        yield services
    finally:
        services.stop_all()


async def test_a_language_added_through_the_file_runs_end_to_end(
    operator_stack: ServiceProcesses,
) -> None:
    async with await DcodexClient.connect(operator_stack.url, prefix="oper") as client:
        languages = {lang.id: lang for lang in (await client.languages()).languages}
        assert {"asm", "perl"} <= set(languages) and not {"bash", "nolang"} & set(languages)
        assert languages["asm"].compiled and languages["asm"].version.startswith("gas GNU")
        result = await client.execute({"language": "gas", "code": HELLO_ASM})
        assert (result.status, result.stdout, result.language) == ("ok", "asm says hi\n", "asm")
        assert result.compile_time_ms is not None
        perl = await client.execute({"language": "perl", "code": 'print "perl ", 6 * 7, "\\n";'})
        assert (perl.status, perl.stdout) == ("ok", "perl 42\n")
        snake = await client.execute({"language": "snake", "code": "print('hiss')"})
        assert snake.stdout == "hiss\n" and snake.language == "python"
        with pytest.raises(DcodexError) as raised:
            await client.execute({"language": "bash", "code": "echo no"})
        assert raised.value.code == 404
    assert "language_unavailable" in operator_stack.log("compiler")
    assert "nolang" in operator_stack.log("runner")
