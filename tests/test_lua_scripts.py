"""The Lua script files and their loader: headers, includes, the generated prelude."""

from __future__ import annotations

import hashlib
import json

import pytest
from redis.asyncio import Redis

from server.domain.status import TERMINAL, TRANSITIONS, Status
from server.record import lua
from server.record.keys import ARCHIVE_STREAM_MAX, OTP_EXPIRY_GRACE

SCRIPT_FILES = sorted(p.stem for p in lua.SCRIPTS_DIR.glob("*.lua") if not p.name.startswith("_"))
INCLUDE_FILES = sorted(p.name for p in lua.SCRIPTS_DIR.glob("_*.lua"))


def header(name: str) -> list[str]:
    """The leading comment block of scripts/{name}.lua."""
    lines = []
    for line in (lua.SCRIPTS_DIR / f"{name}.lua").read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return lines


def test_generated_prelude_is_what_its_python_owners_render() -> None:
    # When this fails, run `python -m server.record.lua` and commit the result.
    committed = (lua.SCRIPTS_DIR / lua.GENERATED).read_text(encoding="utf-8")
    assert committed == lua.render_generated()


def test_every_script_file_is_exposed() -> None:
    exposed = {name[: -len("_SCRIPT")].lower(): getattr(lua, name) for name in dir(lua) if name.endswith("_SCRIPT")}
    assert sorted(exposed) == SCRIPT_FILES
    for name, text in exposed.items():
        assert text == lua.load(name)
    assert INCLUDE_FILES == ["_generated.lua", "_prelude.lua"]


@pytest.mark.parametrize("name", SCRIPT_FILES)
def test_script_header_documents_keys_argv_and_returns(name: str) -> None:
    lines = header(name)
    assert lines, f"{name}.lua has no leading comment header"
    for word in ("KEYS[1]", "ARGV[1]", "Returns"):
        assert any(word in line for line in lines), f"{name}.lua's header does not document {word}"


@pytest.mark.parametrize("name", SCRIPT_FILES)
def test_includes_are_shared_files_in_order(name: str) -> None:
    text = (lua.SCRIPTS_DIR / f"{name}.lua").read_text(encoding="utf-8")
    names = lua.includes(text)
    assert names in ([], ["_generated.lua", "_prelude.lua"])
    # An include outside the leading comment block would be silently ignored.
    assert text.count("--!include") == len(names)


@pytest.mark.parametrize("name", SCRIPT_FILES)
async def test_script_compiles_and_its_sha_is_its_text(redis: Redis, name: str) -> None:
    text = lua.load(name)
    sha = await redis.script_load(text)
    assert sha == hashlib.sha1(text.encode()).hexdigest()


async def test_generated_values_reach_lua(redis: Redis) -> None:
    out = await redis.eval(
        lua._PRELUDE
        + "\nreturn cjson.encode({TERMINAL = TERMINAL, RUNNING = RUNNING, ALLOWED = ALLOWED,"
        + " grace = OTP_EXPIRY_GRACE, max = ARCHIVE_STREAM_MAX})",
        0,
    )
    got = json.loads(out)
    assert set(got["TERMINAL"]) == {s.value for s in TERMINAL}
    assert set(got["RUNNING"]) == {Status.PROCESSING.value, Status.WAITING_OTP.value, Status.WAITING_INPUT.value}
    # cjson encodes an empty table as {}: a status with no way out has no keys.
    assert {src: set(dests) for src, dests in got["ALLOWED"].items()} == {
        src.value: {d.value for d in dests} for src, dests in TRANSITIONS.items()
    }
    assert got["grace"] == OTP_EXPIRY_GRACE
    assert got["max"] == str(ARCHIVE_STREAM_MAX)
