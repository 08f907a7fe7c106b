"""The result-cache key (docs/cache.md): what shares a key and what does not."""

from __future__ import annotations

import json
import uuid

from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import EffectiveLimits, ExecutionResult
from dcodex.shared.results import cache_key

LIMITS = EffectiveLimits(
    cpu_time_s=1.0,
    wall_time_s=2.0,
    memory_bytes=1 << 30,
    output_bytes=10240,
    processes=64,
    file_size_bytes=1 << 20,
)
BASE = ("python", "python 3.11", "print(input())", "x\n", ["a", "b"], LIMITS)


def test_key_is_a_sha256_hex_digest_and_stable() -> None:
    key = cache_key(*BASE)
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key(*BASE) == key


def test_every_input_changes_the_key() -> None:
    language, version, code, stdin, args, limits = BASE
    variants = [
        (language.replace("python", "c"), version, code, stdin, args, limits),
        (language, "python 3.12", code, stdin, args, limits),
        (language, version, code + " ", stdin, args, limits),
        (language, version, code, stdin + "y", args, limits),
        (language, version, code, stdin, ["b", "a"], limits),
        (language, version, code, stdin, ["a b"], limits),
        (language, version, code, stdin, args, limits.model_copy(update={"wall_time_s": 3.0})),
        (language, version, code, stdin, args, limits.model_copy(update={"processes": 1})),
    ]
    keys = {cache_key(*variant) for variant in variants}
    assert len(keys) == len(variants) and cache_key(*BASE) not in keys


def test_fields_cannot_run_into_each_other() -> None:
    language, version, _, _, args, limits = BASE
    # The same characters split differently between code and stdin are different runs.
    assert cache_key(language, version, "ab", "c", args, limits) != cache_key(
        language, version, "a", "bc", args, limits
    )


def request(code: str, **fields: object) -> dict[str, object]:
    return {"language": "python", "code": code, **fields}


async def test_field_order_alias_and_explicit_defaults_share_one_key(
    client: DcodexClient,
) -> None:
    code = f"print('same run')  # {uuid.uuid4().hex}"
    defaults = (await client.languages()).limits.defaults
    first = await client.execute(request(code, stdin="in\n", args=["1"]))
    assert first.cache_hit is False and first.cache_key is not None
    # The same request with its fields in another order, sent as raw JSON.
    reordered = json.dumps({"args": ["1"], "stdin": "in\n", "code": code, "language": "python"})
    reply = await client.nc.request("dcodex.execute", reordered.encode(), timeout=30)
    explicit = {"wall_time_s": defaults.wall_time_s, "processes": defaults.processes}
    same = [
        ExecutionResult.model_validate_json(reply.data),
        await client.execute(request(code, stdin="in\n", args=["1"]) | {"language": "py"}),
        await client.execute(request(code, stdin="in\n", args=["1"]) | {"language": "Python3"}),
        await client.execute(request(code, stdin="in\n", args=["1"], limits=explicit)),
    ]
    assert [(r.cache_hit, r.cache_key) for r in same] == [(True, first.cache_key)] * len(same)
    assert {r.stdout for r in same} == {first.stdout}


async def test_a_non_default_limit_is_another_key(client: DcodexClient) -> None:
    code = f"print('limits')  # {uuid.uuid4().hex}"
    defaults = (await client.languages()).limits.defaults
    first = await client.execute(request(code))
    other = await client.execute(request(code, limits={"cpu_time_s": defaults.cpu_time_s / 2}))
    assert other.cache_hit is False and other.cache_key != first.cache_key


async def test_bypassed_requests_have_no_key(client: DcodexClient) -> None:
    result = await client.execute(request("print(1)", cache=False))
    assert result.cache_hit is False and result.cache_key is None
    assert (await client.run(request("print(1)"))).cache_key is None


async def test_compile_options_are_part_of_the_key(client: DcodexClient) -> None:
    cpp = (await client.languages()).language("cpp")
    code = '#include <cstdio>\nint main() { std::printf("%ld\\n", __cplusplus); }\n'
    code += f"// {uuid.uuid4().hex}"
    default = await client.execute({"language": "cpp", "code": code})
    named_default = await client.execute(
        {
            "language": "cpp",
            "code": code,
            "std": cpp.default_std,
            "optimization": cpp.default_optimization,
        }
    )
    other_std = next(std for std in cpp.std if std != cpp.default_std)
    other = await client.execute({"language": "cpp", "code": code, "std": other_std})
    assert named_default.cache_hit and named_default.cache_key == default.cache_key
    assert other.cache_hit is False and other.cache_key != default.cache_key
    assert other.stdout != default.stdout, "another standard, another __cplusplus"
