"""Per-request compile options (`std`, `optimization`) and the added languages, end to end."""

from __future__ import annotations

import pytest

from dcodex.shared import bus
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import CompileResult
from dcodex.shared.errors import DcodexError
from tests.test_languages_registry import output_of

pytestmark = pytest.mark.bus


# Designated initialisers and `consteval` are C++20.
CPP20 = """#include <cstdio>
struct Point { int x, y; };
consteval int twice(int v) { return 2 * v; }
int main() { Point p{.x = 1, .y = twice(2)}; std::printf("%d %d\\n", p.x, p.y); }
"""
# A declaration in a for statement is C99.
C99 = '#include <stdio.h>\nint main(void) { for (int i = 0; i < 1; i++) puts("c99"); return 0; }\n'


async def compile_with(client: DcodexClient, **request: str) -> CompileResult:
    reply = await bus.request(
        client.nc, "dcodex.compile", request, request_id=bus.new_id(), timeout=60
    )
    return CompileResult.model_validate(reply)


async def test_std_choice_decides_what_compiles(client: DcodexClient) -> None:
    newer = await client.run({"language": "cpp", "code": CPP20, "std": "c++20"})
    assert (newer.status, newer.stdout) == ("ok", "1 4\n")
    default = await client.run({"language": "cpp", "code": CPP20})
    assert default.status == "compile_error" and "consteval" in default.compile_output
    c99 = await client.run({"language": "c", "code": C99, "std": "c99"})
    assert (c99.status, c99.stdout) == ("ok", "c99\n")
    c89 = await client.run({"language": "c", "code": C99, "std": "c89"})
    assert c89.status == "compile_error" and "C99" in c89.compile_output


async def test_optimization_choice_is_its_own_artifact(client: DcodexClient) -> None:
    code = "int main(void) { volatile int x = 6 * 7; return x - 42; }\n"
    plain = await compile_with(client, language="c", code=code, optimization="O0")
    fast = await compile_with(client, language="c", code=code, optimization="O3")
    assert plain.status == fast.status == "ok"
    assert plain.digest != fast.digest and plain.artifact != fast.artifact
    again = await compile_with(client, language="c", code=code, optimization="O3")
    assert again.cached is True and again.digest == fast.digest


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"language": "cpp", "std": "c++98"}, "std"),
        ({"language": "cpp", "std": "c++17 -fplugin=/tmp/x.so"}, "std"),
        ({"language": "cpp", "optimization": "-O3"}, "optimization"),
        ({"language": "c", "optimization": "O9"}, "optimization"),
        ({"language": "python", "std": "3.11"}, "std"),
        ({"language": "bash", "optimization": "O2"}, "optimization"),
    ],
)
async def test_options_off_the_allowlist_are_400_naming_the_field(
    client: DcodexClient, request_fields: dict[str, str], field: str
) -> None:
    code = "print(1)" if request_fields["language"] in {"python", "bash"} else "int main(){}"
    request = {"code": code, **request_fields}
    for call in (client.execute, client.run):
        with pytest.raises(DcodexError) as raised:
            await call(request)
        assert raised.value.code == 400 and raised.value.field == field
    if request_fields["language"] in {"c", "cpp"}:
        with pytest.raises(DcodexError) as raised:
            await compile_with(client, **request)
        assert raised.value.code == 400 and raised.value.field == field


async def test_languages_lists_choices_and_real_versions(client: DcodexClient) -> None:
    languages = {lang.id: lang for lang in (await client.languages()).languages}
    cpp = languages["cpp"]
    assert cpp.default_std == "c++17" and {"c++17", "c++20", "c++23"} <= set(cpp.std)
    assert cpp.default_optimization == "O2" and "O3" in cpp.optimization
    assert languages["python"].std == [] and languages["python"].default_std is None
    assert languages["javascript"].version == f"node {output_of('node', '--version')}"
    assert languages["bash"].version.startswith("bash 5.")
    assert not languages["javascript"].compiled and not languages["bash"].compiled


async def test_javascript_and_bash_run_from_source(client: DcodexClient) -> None:
    js = await client.execute(
        {"language": "node", "code": "const s = require('fs').readFileSync(0, 'utf8');\n"
         "console.log(s.trim().split(' ').map(Number).reduce((a, b) => a + b));",
         "stdin": "1 2 39\n"}
    )  # fmt: skip
    assert (js.status, js.stdout, js.language) == ("ok", "42\n", "javascript")
    assert js.compile_time_ms is None
    sh = await client.execute(
        {
            "language": "sh",
            "code": 'read a b; echo "$((a * b)) $1"',
            "stdin": "6 7\n",
            "args": ["x"],
        }
    )
    assert (sh.status, sh.stdout, sh.language) == ("ok", "42 x\n", "bash")
    failing = await client.execute({"language": "bash", "code": "exit 3"})
    assert (failing.status, failing.exit_code) == ("runtime_error", 3)


async def test_rust_compiles_and_runs_with_its_edition(client: DcodexClient) -> None:
    rust = next(lang for lang in (await client.languages()).languages if lang.id == "rust")
    assert rust.version == output_of("rustc", "--version") and rust.compiled
    code = (
        "fn main() { let mut s = String::new(); std::io::stdin().read_line(&mut s).unwrap();\n"
        '  let n: u64 = s.trim().parse().unwrap(); println!("{}", (1..=n).product::<u64>()); }'
    )
    result = await client.execute({"language": "rs", "code": code, "stdin": "10\n", "std": "2024"})
    assert (result.status, result.stdout, result.language) == ("ok", "3628800\n", "rust")
    broken = await client.execute({"language": "rust", "code": "fn main() { let x: u8 = 300; }"})
    assert broken.status == "compile_error" and "literal out of range" in broken.compile_output
