"""The official E2B SDK (e2b==2.63.0) against agentform's fake E2B.

Run by `cargo test` (tests/e2b.rs) with E2B_API_KEY, E2B_API_URL and
E2B_SANDBOX_URL pointed at the fake over plain HTTP. Every step asserts what
came back, not only that nothing raised. Prints one line per check and
`N passed, M failed` last; exits 1 on any failure.
"""

import sys
import traceback
import uuid

from e2b import CommandExitException, Sandbox, SandboxQuery

results = []


def check(name, condition, detail=""):
    results.append((name, bool(condition)))
    status = "ok  " if condition else "FAIL"
    print(f"{status} {name}" + (f": {detail}" if detail and not condition else ""))


def step(name, fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - every failure is a finding
        check(name, False, traceback.format_exc())


marker = f"lifecycle-{uuid.uuid4().hex}"
metadata = {"agentform.test": marker}
key = f"sdk-{uuid.uuid4().hex}"
state = {}


def create():
    sbx = Sandbox.create(template="base", timeout=120, metadata=metadata, idempotency_key=key)
    state["sbx"] = sbx
    check("create: a sandbox id", sbx.sandbox_id.startswith("sbx"), sbx.sandbox_id)
    again = Sandbox.create(template="base", timeout=120, metadata=metadata, idempotency_key=key)
    check(
        "create: the same idempotency key gives the same sandbox",
        again.sandbox_id == sbx.sandbox_id,
        f"{again.sandbox_id} != {sbx.sandbox_id}",
    )
    other = Sandbox.create(template="base", timeout=120, metadata=metadata)
    state["other"] = other
    check("create: without the key, another sandbox", other.sandbox_id != sbx.sandbox_id)


def run_command():
    sbx = state["sbx"]
    ok = sbx.commands.run("printf hello; printf warn >&2")
    check("run: stdout", ok.stdout == "hello", repr(ok.stdout))
    check("run: stderr", ok.stderr == "warn", repr(ok.stderr))
    check("run: exit code 0", ok.exit_code == 0, repr(ok.exit_code))
    try:
        sbx.commands.run("echo out; echo err >&2; exit 3")
        check("run: a failing command raises", False)
    except CommandExitException as e:
        check("run: failing stdout", e.stdout == "out\n", repr(e.stdout))
        check("run: failing stderr", e.stderr == "err\n", repr(e.stderr))
        check("run: failing exit code", e.exit_code == 3, repr(e.exit_code))
    seen = []
    sbx.commands.run("echo one; sleep 0.2; echo two", on_stdout=seen.append)
    check("run: output streams in order", "".join(seen) == "one\ntwo\n", repr(seen))


def background_connect_and_kill():
    sbx = state["sbx"]
    handle = sbx.commands.run("sleep 1; echo late", background=True)
    check("background: a pid", handle.pid > 0, repr(handle.pid))
    attached = sbx.commands.connect(handle.pid)
    result = attached.wait()
    check("connect: the output after attaching", result.stdout == "late\n", repr(result.stdout))
    check("connect: exit code", result.exit_code == 0, repr(result.exit_code))
    sleeper = sbx.commands.run("sleep 30", background=True)
    check("kill: a running command is killed", sbx.commands.kill(sleeper.pid) is True)
    try:
        sleeper.wait()
        check("kill: the killed command fails", False)
    except CommandExitException as e:
        check("kill: the killed command fails", e.exit_code != 0, repr(e.exit_code))
    check("kill: an unknown pid is not found", sbx.commands.kill(999999) is False)


def files():
    sbx = state["sbx"]
    info = sbx.files.write("/home/user/notes/note.txt", "written by the sdk")
    check("write: the path", info.path == "/home/user/notes/note.txt", repr(info.path))
    check("write: the name", info.name == "note.txt", repr(info.name))
    text = sbx.files.read("/home/user/notes/note.txt")
    check("read: the contents", text == "written by the sdk", repr(text))
    raw = sbx.files.write("/home/user/raw.bin", b"\x00\x01bytes", use_octet_stream=True)
    check("write (octet-stream): the path", raw.path == "/home/user/raw.bin", repr(raw.path))
    data = sbx.files.read("/home/user/raw.bin", format="bytes")
    check("read: bytes", bytes(data) == b"\x00\x01bytes", repr(data))
    seen = sbx.commands.run("cat notes/note.txt")
    check("a command sees the written file", seen.stdout == "written by the sdk", repr(seen.stdout))
    entries = sbx.files.list("/home/user", depth=2)
    paths = sorted(e.path for e in entries)
    check("list: the written files", "/home/user/notes/note.txt" in paths and "/home/user/raw.bin" in paths, repr(paths))
    try:
        sbx.files.read("/home/user/missing.txt")
        check("read: a missing file raises", False)
    except Exception as e:  # noqa: BLE001
        check("read: a missing file raises", "not found" in str(e).lower(), repr(e))


def timeout_and_list():
    sbx = state["sbx"]
    sbx.set_timeout(300)
    check("set_timeout: accepted", True)
    paginator = Sandbox.list(query=SandboxQuery(metadata=metadata), limit=1)
    found = []
    pages = 0
    while paginator.has_next:
        found.extend(s.sandbox_id for s in paginator.next_items())
        pages += 1
    expected = sorted([sbx.sandbox_id, state["other"].sandbox_id])
    check("list: by metadata, across pages", sorted(found) == expected, f"{found} vs {expected}")
    check("list: more than one page", pages >= 2, repr(pages))
    info = [s for s in Sandbox.list(query=SandboxQuery(metadata=metadata)).next_items() if s.sandbox_id == sbx.sandbox_id]
    check("list: the metadata", info and info[0].metadata == metadata, repr(info))
    nothing = Sandbox.list(query=SandboxQuery(metadata={"agentform.test": "no-such"})).next_items()
    check("list: no match", nothing == [], repr(nothing))


def kill():
    sbx = state["sbx"]
    check("kill: the sandbox", sbx.kill() is True)
    check("kill again: not found", Sandbox.kill(sbx.sandbox_id) is False)
    check("kill: it is not running", sbx.is_running() is False)
    check("kill: the other one", Sandbox.kill(state["other"].sandbox_id) is True)


step("create", create)
if "sbx" in state:
    step("run", run_command)
    step("background", background_connect_and_kill)
    step("files", files)
    step("timeout and list", timeout_and_list)
    step("kill", kill)

passed = sum(1 for _, ok in results if ok)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 and passed > 0 else 1)
