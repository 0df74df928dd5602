"""The official Modal client (modal==1.6.4) against the fake Modal of the tests.

Run by `tests/modal.rs` with MODAL_SERVER_URL pointing at the fake (plain
h2c on loopback), the token variables set, and MODAL_CONFIG_PATH and HOME in
a temporary directory. It walks a sandbox's lifecycle as a user would: an
app, an image with two local files added as mount layers (a small one put
inline, a big one of random bytes uploaded through the blob store with its
ETag checks), a sandbox with an environment variable, tags and an open
port that finds both files, commands with stdin, stdout, stderr and exit
codes, tunnels, a list by tag, terminate. Every step checks what came back, so the fake is held to
what the official client expects, not the other way round. Prints one line
per check and `N passed, M failed` at the end; exits 1 on any failure.
"""

import hashlib
import os
import sys
import tempfile
import traceback

import modal
from modal.sandbox._common import SandboxVersion, _get_sandbox_version

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)


SMALL_TEXT = "a small file, put inline\n"
BIG_SIZE = 5 * 1024 * 1024 + 12345  # above the client's 4 MiB: goes to the blob store


def local_files(dir):
    """A small text file and a big file of random bytes; the big one's sha256."""
    small = os.path.join(dir, "small.txt")
    with open(small, "w") as f:
        f.write(SMALL_TEXT)
    big = os.path.join(dir, "big.bin")
    data = os.urandom(BIG_SIZE)
    with open(big, "wb") as f:
        f.write(data)
    return small, big, hashlib.sha256(data).hexdigest()


def lifecycle():
    with tempfile.TemporaryDirectory() as dir:
        lifecycle_with(*local_files(dir))


def lifecycle_with(small, big, big_sha256):
    app = modal.App.lookup("agentform-sdk-lifecycle", create_if_missing=True)
    check("the app has an id", app.app_id.startswith("ap-"), app.app_id)
    again = modal.App.lookup("agentform-sdk-lifecycle", create_if_missing=True)
    check("looking the app up again finds the same app", again.app_id == app.app_id, again.app_id)

    image = (
        modal.Image.debian_slim()
        .run_commands("mkdir -p /data")
        .add_local_file(small, "/data/small.txt")
        .add_local_file(big, "/data/big.bin")
    )
    tags = {"agentform.session": "sesn_sdk", "purpose": "lifecycle"}
    sb = modal.Sandbox.create(
        app=app,
        image=image,
        env={"GREETING": "hello from env"},
        encrypted_ports=[8080],
        tags=tags,
        workdir="/data",
        timeout=600,
    )
    check(
        "the sandbox id has the V2 shape",
        sb.object_id.startswith("sb-") and _get_sandbox_version(sb.object_id) == SandboxVersion.V2,
        sb.object_id,
    )
    check("the image was built", image.object_id.startswith("im-"), image.object_id)

    p = sb.exec("cat", "small.txt")
    out = p.stdout.read()
    check("the small mounted file is there", p.wait() == 0 and out == SMALL_TEXT, repr(out))
    p = sb.exec("sha256sum", "big.bin")
    out = p.stdout.read()
    check(
        "the big mounted file arrived whole",
        p.wait() == 0 and out.split() == [big_sha256, "big.bin"],
        f"{out!r}, expected {big_sha256}",
    )

    p = sb.exec("bash", "-c", 'echo "$GREETING"; echo to-stderr >&2; pwd; exit 3')
    out = p.stdout.read()
    err = p.stderr.read()
    code = p.wait()
    check("stdout carries the sandbox's variable", out.splitlines()[0] == "hello from env", repr(out))
    check("the command ran in the workdir", out.rstrip().endswith("/data"), repr(out))
    check("stderr is its own stream", err == "to-stderr\n", repr(err))
    check("the exit code comes back", code == 3 and p.returncode == 3, f"{code} {p.returncode}")

    p = sb.exec("bash", "-c", "tr a-z A-Z; echo done-$EXTRA", env={"EXTRA": "x1"})
    p.stdin.write(b"piped through stdin\n")
    p.stdin.write(b"second line\n")
    p.stdin.write_eof()
    p.stdin.drain()
    out = p.stdout.read()
    check("stdin reaches the command", out == "PIPED THROUGH STDIN\nSECOND LINE\ndone-x1\n", repr(out))
    check("a command that read stdin exits 0", p.wait() == 0, p.returncode)

    p = sb.exec("bash", "-c", "head -c 300000 /dev/zero | tr '\\0' a", text=False)
    data = p.stdout.read()
    check("large output arrives whole", data == b"a" * 300000, len(data))
    p.wait()

    p = sb.exec("bash", "-c", "sleep 0.3; exit 0")
    polled = p.poll()
    check("poll before the end says running", polled is None, polled)
    check("then it exits 0", p.wait() == 0, p.returncode)

    tunnels = sb.tunnels()
    check("the open port has a tunnel", set(tunnels) == {8080}, tunnels)
    check("the tunnel is https", tunnels[8080].url.startswith("https://"), tunnels[8080].url)

    check("the sandbox carries its tags", sb.get_tags() == tags, sb.get_tags())
    listed = [s.object_id for s in modal.Sandbox.list(app_id=app.app_id, tags={"agentform.session": "sesn_sdk"})]
    check("listing by tag finds the sandbox", listed == [sb.object_id], listed)
    other = [s.object_id for s in modal.Sandbox.list(app_id=app.app_id, tags={"agentform.session": "other"})]
    check("listing by another tag finds nothing", other == [], other)

    found = modal.Sandbox.from_id(sb.object_id)
    p = found.exec("cat", "/proc/self/cmdline")
    p.wait()
    check("a sandbox found by id runs commands", p.returncode == 0, p.returncode)

    check("poll says running", sb.poll() is None, sb.returncode)
    sb.terminate()
    sb.wait(raise_on_termination=False)
    check("after terminate the sandbox has an exit code", sb.returncode is not None, sb.returncode)
    listed = [s.object_id for s in modal.Sandbox.list(app_id=app.app_id, tags={"agentform.session": "sesn_sdk"})]
    check("a terminated sandbox is not listed", listed == [], listed)


def main():
    try:
        lifecycle()
    except Exception:
        traceback.print_exc()
        results.append(False)
    passed = sum(results)
    failed = len(results) - passed
    print(f"modal lifecycle: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
