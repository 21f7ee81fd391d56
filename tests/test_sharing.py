"""Sharing rendered sets between machines, against real servers on loopback: `python -m http.server` for
read-only HTTP stores, OpenSSH's sshd (a throwaway host key and user key, started by the test) for SFTP stores.

Two directories stand for two machines: A renders and pushes, B discovers, pulls and trains from the store.
Faults are real too: servers killed mid-transfer (cut at a known byte by a relay on loopback), corrupt bytes on the store, a missing manifest, a full store,
a read-only one, a changed host key, and manifests that try to escape the destination.
"""

from __future__ import annotations

import getpass
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from pipeline.datasets import mini
from pipeline.generation.generate import generate, resolve_spec
from shards.errors import ShardSetError, StoreError
from shards.layout import parquet_path, set_dir, spec_hash, tar_path
from shards.manifest import load_manifest, make_manifest, write_manifest
from shards.pull import parse_address, pool_from_store, pull_set
from shards.push import push_set
from shards.store import list_sets, open_store, parse_manifest
from shards.verify import verify_set
from shards.writer import ShardWriter
from tests.conftest import ROOT, gift_cmd, run_gift, set_files

CPU = torch.device("cpu")
POOL = ("mini-base", "mini-a", "mini-b")  # the `mini` order's replay pool
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


# --------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 60  # generous: a loaded CI machine may take a while to start a server
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class HttpServer:
    """`python -m http.server` over a store directory: docs/sharing.md's read-only store."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "--directory", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, "http.server")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def http_server():
    servers = []

    def serve(root: Path) -> HttpServer:
        servers.append(HttpServer(root))
        return servers[-1]

    yield serve
    for s in servers:
        s.kill()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Sshd:
    """OpenSSH's sshd on two loopback ports: SFTP read-write on ``port``, read-only (`internal-sftp -R`) on
    ``ro_port``. Host and user keys are made for the test; a client config gives the alias ``giftstore``."""

    def __init__(self, tmp: Path):
        self.tmp, self.port, self.ro_port = tmp, free_port(), free_port()
        for key in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True)
        (tmp / "sshd_config").write_text(f"""\
Port {self.port}
Port {self.ro_port}
ListenAddress 127.0.0.1
HostKey {tmp / 'host_key'}
AuthorizedKeysFile {tmp / 'user_key.pub'}
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile {tmp / 'sshd.pid'}
Subsystem sftp internal-sftp
Match LocalPort {self.ro_port}
    ForceCommand internal-sftp -R
""")
        self.env = self.client_env({"giftstore": self.port, "giftstore-ro": self.ro_port}, tmp)
        self.start()

    def client_env(self, aliases: dict[str, int], where: Path) -> dict[str, str]:
        """Client settings (``$GIFT_SSH_CONFIG``) written under ``where``: each alias reaches this sshd on its port
        (its own, or a relay's in front of it), whose host key is the only one known there."""
        kind, key = (self.tmp / "host_key.pub").read_text().split()[:2]
        known = where / "known_hosts"
        known.write_text("".join(f"[127.0.0.1]:{port} {kind} {key}\n" for port in aliases.values()))
        (where / "ssh_config").write_text("".join(
            f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
            f"  IdentityFile {self.tmp / 'user_key'}\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
            for name, port in aliases.items()))
        return {"GIFT_SSH_CONFIG": str(where / "ssh_config")}

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.log = open(self.tmp / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.tmp / "sshd_config")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, "sshd")

    def kill(self) -> None:
        """Cut every connection: the listener and the per-connection processes it forked."""
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    # Never a skip: a missing sshd, one that does not start, or one that refuses our key login all fail (the
    # last two may be our ssh:// code). `make test` installs sshd where it can (tests/ensure_sshd.sh).
    if SSHD is None:
        pytest.fail("sshd (OpenSSH's server) is not installed; the ssh:// store tests run against a real one on "
                    "loopback. Install it (Debian/Ubuntu: apt-get install openssh-server), or run `make test`, "
                    "which does so where it can")
    tmp = tmp_path_factory.mktemp("sshd")
    try:
        server = Sshd(tmp)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log = (tmp / "sshd.log").read_text(errors="replace") if (tmp / "sshd.log").exists() else ""
        pytest.fail(f"sshd could not be started on loopback as {getpass.getuser()}: {e}\n{log}")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GIFT_SSH_CONFIG", server.env["GIFT_SSH_CONFIG"])
            open_store("ssh://giftstore/")
    except StoreError as e:
        server.kill()
        log = (tmp / "sshd.log").read_text(errors="replace")
        pytest.fail(f"sshd runs but refuses a key login as {getpass.getuser()}: {e}\n{log}")
    yield server
    server.kill()


@pytest.fixture
def ssh_env(sshd, monkeypatch):
    monkeypatch.setenv("GIFT_SSH_CONFIG", sshd.env["GIFT_SSH_CONFIG"])
    return sshd.env


class Relay:
    """A TCP relay on loopback in front of a real server that passes at most ``budget`` bytes one way (``upstream``:
    client to server; else server to client), then holds the rest. A transfer through it stops part-way through a
    file, at a known point on any machine, and cannot finish; ``cut()`` then drops every connection."""

    def __init__(self, server_port: int, budget: int, *, upstream: bool):
        self.server_port, self.left, self.upstream = server_port, budget, upstream
        self.reached, self.released = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # cut
                return
            server = socket.create_connection(("127.0.0.1", self.server_port))
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, self.upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, not self.upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limited: bool) -> None:
        try:
            while True:
                n = 1 << 16
                if limited:
                    with self.lock:  # reserve before reading: the connections share one budget
                        n = min(n, self.left)
                        self.left -= n
                    if n == 0:
                        self.reached.set()
                        self.released.wait()
                        return
                data = src.recv(n)
                if limited:
                    with self.lock:
                        self.left += n - len(data)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:  # a side was cut or killed
            return

    def cut(self) -> None:
        self.released.set()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked in recv
            except OSError:
                pass
            s.close()


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll ``condition`` while ``proc`` runs; fail naming ``what`` if the process ends or time runs out first."""
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the transfer ended before {what}: {proc.communicate()[1]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------- sets


@pytest.fixture(scope="module")
def machine_a(tmp_path_factory) -> Path:
    """Machine A's shard root: the `mini` order's pool rendered by the `reference` generator."""
    root = tmp_path_factory.mktemp("machine-a")
    reference = mini.export_reference(root / "reference")
    for task in POOL:
        spec = resolve_spec(task, model=f"reference:{reference}", per_class=3, size=32, shard_size=8, device=CPU)
        generate(spec, root / "shards", device=CPU)
    return root / "shards"


def a_set(machine_a: Path, task: str) -> Path:
    return next((machine_a / task).iterdir())


@pytest.fixture(scope="module")
def big_set(tmp_path_factory) -> Path:
    """A two-shard set whose second shard (32 MB) is large enough to be cut off mid-transfer."""
    root = tmp_path_factory.mktemp("big")
    spec = {"task": "big", "generator": "test", "note": "random bytes, for transfer faults"}
    set_path = set_dir(root, "big", spec_hash(spec))
    set_path.mkdir(parents=True)
    records = {}
    for index, sizes in enumerate(([20_000], [8 << 20] * 4)):
        with ShardWriter(set_path, index, {"device": "test"}) as writer:
            for k, size in enumerate(sizes):
                key = f"big-{index:04d}-{k:04d}"
                row = {"key": key, "class_index": 0, "class_name": "noise", "prompt": "noise", "seed": k}
                writer.add(row, os.urandom(size), "png", {"key": key})
            records[index] = writer.commit()
    write_manifest(set_path, make_manifest(task="big", spec=spec, num_shards=2, planned_samples=5, records=records,
                                           versions={}))
    assert verify_set(set_path, deep=False).ok
    return set_path


def published_store(machine_a: Path, dest: Path) -> Path:
    push_set(a_set(machine_a, "mini-a"), open_store(dest))
    return dest


def one_line(text: str) -> str:
    """Rich wraps long messages; compare them with the line breaks undone."""
    return " ".join(text.split())


def assert_nothing_visible(set_path: Path, *final_names: str) -> None:
    """No manifest (the set is invisible), no half-written temporaries, and none of ``final_names``."""
    assert not (set_path / "manifest.json").exists()
    if set_path.exists():
        assert not list(set_path.glob(".*")), list(set_path.glob(".*"))
    for name in final_names:
        assert not (set_path / name).exists(), name


# --------------------------------------------------------------------------------------------- the scenario


def test_pushing_a_root_skips_incomplete_sets(machine_a, tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    shutil.copytree(machine_a, root)
    unfinished = a_set(root, "mini-b")
    m = load_manifest(unfinished)
    assert len(m["shards"]) == 2
    tar_path(unfinished, 1).unlink()
    parquet_path(unfinished, 1).unlink()
    write_manifest(unfinished, {**m, "shards": m["shards"][:1], "complete": False})
    r = run_gift("shards", "push", root, store)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stdout and "incomplete" in r.stdout and r.stdout.count("published") == 2
    assert {p.name for p in store.iterdir()} == set(POOL) - {"mini-b"}
    only = tmp_path / "only"
    shutil.copytree(unfinished, only / "mini-b" / unfinished.name)
    r = run_gift("shards", "push", only, tmp_path / "store2")
    assert r.returncode != 0 and "no complete shard set" in r.stderr
    assert not (tmp_path / "store2").exists()


def test_two_machines_push_discover_pull_and_train_from_http(machine_a, tmp_path, http_server):
    store, b = tmp_path / "store", tmp_path / "machine-b"
    # Machine A publishes its whole root to a directory store (an NFS mount, say).
    r = run_gift("shards", "push", machine_a, store)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("published") == 3
    for task in POOL:
        local = a_set(machine_a, task)
        remote = store / task / local.name
        assert set_files(remote) == set_files(local)
        assert load_manifest(remote)["shards"] == load_manifest(local)["shards"]
        assert len(load_manifest(remote)["parquet"]) == len(load_manifest(local)["shards"])
        assert not list(remote.glob(".*"))  # no temporaries, no pending manifest left
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    # Content-addressed: publishing again sends nothing and touches nothing.
    again = push_set(a_set(machine_a, "mini-base"), open_store(store))
    assert again.state == "already" and again.bytes_sent == 0 and not again.uploaded
    assert mtimes == {p: p.stat().st_mtime_ns for p in store.rglob("*")}

    # Machine B discovers the sets through a static web server and pulls one.
    server = http_server(store)
    r = run_gift("shards", "ls", server.url)
    assert r.returncode == 0, r.stderr
    for task in POOL:
        assert f"{server.url}/{task}/{a_set(machine_a, task).name}" in r.stdout
    assert r.stdout.count(" yes ") == 3
    local = a_set(machine_a, "mini-a")
    r = run_gift("shards", "pull", f"{server.url}/mini-a/{local.name}", b / "shards")
    assert r.returncode == 0, r.stderr
    pulled = b / "shards" / "mini-a" / local.name
    assert set_files(pulled) == set_files(local) and verify_set(pulled).ok
    assert "2 shards fetched" in r.stdout

    # Machine B trains straight from the store: the pool streams through a local cache, verified once.
    args = ["train", "--order", "mini", "--method", "gift", "--runs", b / "runs", "--shards", server.url,
            "--shard-cache", b / "cache", "--clip", "tiny", "--clip-weights", "none", "--iterations", "1",
            "--batch-size", "4", "--synthetic-batch", "4", "--synthetic-budget", "8", "--warmup", "1",
            "--workers", "0", "--device", "cpu"]
    r = run_gift(*args)
    assert r.returncode == 0, r.stderr
    assert (b / "runs" / "gift-ordermini" / "acc_matrix.npy").exists()
    for task in POOL:
        cached = next((b / "cache").glob(f"*/{task}/{a_set(machine_a, task).name}"))
        assert set_files(cached) == set_files(a_set(machine_a, task))
    # Later runs read the cache, not the network: the server is gone.
    server.kill()
    assert pool_from_store(server.url, POOL, b / "cache").parent == b / "cache"
    r = run_gift(*args)  # the same command again: it resumes the finished run, the pool coming from the cache
    assert r.returncode == 0, r.stderr


def test_push_ls_pull_over_ssh(machine_a, tmp_path, ssh_env):
    local = a_set(machine_a, "mini-base")
    url = f"ssh://giftstore{tmp_path / 'store'}"
    r = run_gift("shards", "push", local, url, env=ssh_env)
    assert r.returncode == 0, r.stderr
    remote = tmp_path / "store" / "mini-base" / local.name
    assert set_files(remote) == set_files(local) and (remote / "manifest.json").exists()
    assert push_set(local, open_store(url)).state == "already"  # nothing transferred the second time
    assert [(s.task, s.hash16, s.manifest["complete"]) for s in list_sets(open_store(url))] == [
        ("mini-base", local.name, True)]
    r = run_gift("shards", "pull", f"{url}/mini-base/{local.name}", tmp_path / "b", env=ssh_env)
    assert r.returncode == 0, r.stderr
    assert set_files(tmp_path / "b" / "mini-base" / local.name) == set_files(local)


def test_changed_host_key_is_refused(machine_a, tmp_path, sshd):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    config = Path(sshd.env["GIFT_SSH_CONFIG"]).read_text().replace(str(sshd.tmp / "known_hosts"),
                                                                   str(tmp_path / "known_hosts"))
    (tmp_path / "ssh_config").write_text(config)
    r = run_gift("shards", "push", a_set(machine_a, "mini-a"), f"ssh://giftstore{tmp_path / 'store'}",
                 env={"GIFT_SSH_CONFIG": str(tmp_path / "ssh_config")})
    assert r.returncode == 2 and "host key" in one_line(r.stderr) and "man in the middle" in one_line(r.stderr), r.stderr
    assert not (tmp_path / "store").exists()


def test_read_only_stores_refuse_a_push_clearly(machine_a, tmp_path, ssh_env, http_server):
    r = run_gift("shards", "push", a_set(machine_a, "mini-a"), f"ssh://giftstore-ro{tmp_path / 'store'}", env=ssh_env)
    assert r.returncode == 2 and "permission denied" in one_line(r.stderr) and "read-only" in one_line(r.stderr), r.stderr
    assert not (tmp_path / "store").exists()
    server = http_server(tmp_path)
    with pytest.raises(StoreError, match="read-only"):
        push_set(a_set(machine_a, "mini-a"), open_store(server.url))


# --------------------------------------------------------------------------------------------- faults


# Cut transfers go through a Relay that lets 4 MB through: past the first shard (20 kB) and well inside the second
# (32 MB), so the cut always lands mid-file whatever the machine's speed.
CUT_AT = 4 << 20


def test_http_server_killed_mid_pull_then_resume(big_set, tmp_path, http_server):
    store = tmp_path / "store"
    push_set(big_set, open_store(store))
    server = http_server(store)
    relay = Relay(server.port, CUT_AT, upstream=False)
    dest = tmp_path / "b"
    set_path = dest / "big" / big_set.name
    proc = subprocess.Popen(gift_cmd("shards", "pull", f"http://127.0.0.1:{relay.port}/big/{big_set.name}", dest),
                            cwd=ROOT, env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: relay.reached.is_set() and list(set_path.glob(".000001.tar.tmp-*")), proc,
                   "4 MB of the 32 MB shard arrived")
        server.kill()  # the connection is cut with most of the shard still unsent
        relay.cut()
        _, err = proc.communicate(timeout=120)
    finally:
        relay.cut()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2 and "re-run the same command" in one_line(err), err
    assert_nothing_visible(set_path, "000001.tar", "000001.parquet")
    assert (set_path / "000000.tar").exists()  # the shard verified before the cut is kept
    server.start()
    result = pull_set(open_store(server.url), "big", big_set.name, dest)
    assert result.downloaded == [1] and result.kept == [0]
    assert set_files(set_path) == set_files(big_set)


def test_sshd_killed_mid_push_then_resume(big_set, tmp_path, sshd, ssh_env):
    store = tmp_path / "store"
    remote = store / "big" / big_set.name
    relay = Relay(sshd.port, CUT_AT, upstream=True)
    via_relay = sshd.client_env({"giftstore": relay.port}, tmp_path)
    proc = subprocess.Popen(gift_cmd("shards", "push", big_set, f"ssh://giftstore{store}"), cwd=ROOT,
                            env={**os.environ, **via_relay, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: relay.reached.is_set() and (remote / ".000001.tar.part").exists(), proc,
                   "4 MB of the 32 MB shard were sent")
        sshd.kill()
        relay.cut()
        _, err = proc.communicate(timeout=120)
    finally:
        relay.cut()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if sshd.proc.poll() is not None:  # killed above: the module's other tests need it back
            sshd.start()
    assert proc.returncode == 2 and "re-run the same command" in one_line(err), err
    assert not (remote / "manifest.json").exists()  # not published: readers cannot see it
    assert (remote / ".000001.tar.part").stat().st_size <= CUT_AT and not (remote / "000001.tar").exists()
    url = f"ssh://giftstore{store}"
    with pytest.raises(StoreError, match="no manifest.json"):
        pull_set(open_store(url), "big", big_set.name, tmp_path / "b")
    result = push_set(big_set, open_store(url))
    assert result.state == "published" and result.kept == ["000000.tar", "000000.parquet"]
    assert set_files(remote) == set_files(big_set)
    pull_set(open_store(url), "big", big_set.name, tmp_path / "b")
    assert set_files(tmp_path / "b" / "big" / big_set.name) == set_files(big_set)


def test_corrupt_shard_on_the_store_is_refused(machine_a, tmp_path, http_server):
    store = published_store(machine_a, tmp_path / "store")
    name = a_set(machine_a, "mini-a").name
    tar = store / "mini-a" / name / "000001.tar"
    good = tar.read_bytes()
    tar.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])  # one flipped bit, same size
    server = http_server(store)
    dest = tmp_path / "b"
    r = run_gift("shards", "pull", f"{server.url}/mini-a/{name}", dest)
    assert r.returncode == 2 and "000001.tar" in one_line(r.stderr) and "disagrees with its manifest" in one_line(r.stderr), r.stderr
    assert_nothing_visible(dest / "mini-a" / name, "000001.tar", "000001.parquet")
    tar.write_bytes(good)  # the store is repaired (re-pushed): re-running completes
    assert pull_set(open_store(server.url), "mini-a", name, dest).downloaded == [1]
    assert set_files(dest / "mini-a" / name) == set_files(a_set(machine_a, "mini-a"))


def test_record_disagreeing_with_the_manifest_is_refused(machine_a, tmp_path):
    """A store made by copying sets (no parquet checksums): the parquet's own record still has to agree."""
    store = tmp_path / "store"
    shutil.copytree(a_set(machine_a, "mini-base"), store / "mini-base" / a_set(machine_a, "mini-base").name)
    set_path = store / "mini-base" / a_set(machine_a, "mini-base").name
    shutil.copy(set_path / "000000.parquet", set_path / "000001.parquet")  # shard 1's record replaced by shard 0's
    with pytest.raises(ShardSetError, match="own record disagrees"):
        pull_set(open_store(store), "mini-base", set_path.name, tmp_path / "b")
    assert_nothing_visible(tmp_path / "b" / "mini-base" / set_path.name, "000001.tar", "000001.parquet")


def test_missing_manifest_is_a_clear_error(machine_a, tmp_path, http_server):
    store = published_store(machine_a, tmp_path / "store")
    name = a_set(machine_a, "mini-a").name
    (store / "mini-a" / name / "manifest.json").unlink()
    server = http_server(store)
    r = run_gift("shards", "pull", f"{server.url}/mini-a/{name}", tmp_path / "b")
    assert r.returncode == 2 and "no manifest.json" in one_line(r.stderr) and "not published" in one_line(r.stderr), r.stderr
    assert not (tmp_path / "b").exists()
    [listed] = list_sets(open_store(server.url))  # `ls` shows it as a push in progress or interrupted
    assert (listed.task, listed.hash16, listed.manifest, listed.problem) == ("mini-a", name, None, None)


def test_full_store_then_resume(big_set, tmp_path):
    """A real write failure on the store (RLIMIT_FSIZE -> EFBIG, as a full disk gives ENOSPC) mid-push."""

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    store = tmp_path / "store"
    r = run_gift("shards", "push", big_set, store, preexec_fn=small_files)
    assert r.returncode == 2 and "is full (File too large)" in one_line(r.stderr) and "re-run" in one_line(r.stderr), r.stderr
    remote = store / "big" / big_set.name
    assert not (remote / "manifest.json").exists() and not (remote / "000001.tar").exists()
    result = push_set(big_set, open_store(store))
    assert result.kept == ["000000.tar", "000000.parquet"] and result.uploaded == ["000001.tar", "000001.parquet"]
    assert set_files(remote) == set_files(big_set)


# --------------------------------------------------------------------------------------------- security


def _manifest(machine_a: Path) -> dict:
    return json.loads((a_set(machine_a, "mini-a") / "manifest.json").read_text())


def _with_spec(m: dict, **spec) -> dict:
    m = {**m, "spec": {**m["spec"], **spec}}
    return {**m, "task": m["spec"]["task"], "spec_hash": spec_hash(m["spec"])}


@pytest.mark.parametrize("attack, message", [
    (lambda m: _with_spec(m, task="../../etc"), "task name"),
    (lambda m: _with_spec(m, task="/abs"), "task name"),
    (lambda m: {**m, "shards": [{**m["shards"][0], "index": "../../x"}, *m["shards"][1:]]}, "shard index"),
    (lambda m: {**m, "shards": [{**m["shards"][0], "index": 99}, *m["shards"][1:]]}, "shard index"),
    (lambda m: {**m, "shards": [m["shards"][0], m["shards"][0]]}, "shard index"),
    (lambda m: {**m, "shards": [{**m["shards"][0], "sha256": "../x"}, *m["shards"][1:]]}, "sha256"),
    (lambda m: {**m, "shards": [{**m["shards"][0], "bytes": -1}, *m["shards"][1:]]}, "counts"),
    (lambda m: {**m, "spec_hash": "0" * 64}, "not the hash"),
    (lambda m: {**m, "format": "pickle"}, "format"),
])
def test_untrusted_manifests_are_validated(machine_a, attack, message):
    with pytest.raises(ShardSetError, match=message):
        parse_manifest(json.dumps(attack(_manifest(machine_a))).encode(), "store")
    assert parse_manifest(json.dumps(_manifest(machine_a)).encode(), "store")["task"] == "mini-a"


@pytest.mark.parametrize("address", ["http://h/../etc", "http://h/mini-a/..", "http://h/a/b/../0123456789abcdef",
                                     "ssh://h/mini-a/0123456789abcdeg", "mini-a"])
def test_addresses_are_validated(address):
    with pytest.raises(ShardSetError):
        parse_address(address)


def test_a_manifest_that_lies_about_its_place_is_refused(machine_a, tmp_path):
    """A set directory named like a valid set but holding another task's manifest never lands in a wrong place."""
    store = tmp_path / "store"
    real = a_set(machine_a, "mini-a")
    fake = store / "mini-b" / real.name
    shutil.copytree(real, fake)
    with pytest.raises(ShardSetError, match="not the directory it is in"):
        pull_set(open_store(store), "mini-b", real.name, tmp_path / "b")
    assert not (tmp_path / "b").exists()
