"""A small network of hosts for tests, made of Linux network namespaces (needs root): each host is a namespace
with one interface on a shared switch (a bridge in a namespace of its own) and an address of the test's own
subnet; nothing is added to the machine's own namespace.

A process runs on a host through `ip netns exec`; the test itself reaches a host's network from a thread that has
joined the host's namespace (`Host.call`): every socket is made in the namespace of the thread that creates it."""
from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Self, TypeVar

from testkit.processes import ChildProcess

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_serial = itertools.count()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _enter(namespace: str) -> None:
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
    finally:
        os.close(fd)


class Host:
    """One machine of the network: its namespace, its address, and a thread of the test that lives there."""

    def __init__(self, lan: "Lan", name: str, address: str):
        self.lan = lan
        self.name = name
        self.address = address
        self.namespace = f"{lan.prefix}-{name}"
        self.port = f"{lan.prefix[-6:]}{len(lan.hosts)}"  # the switch's side of this host's cable
        self.thread: ThreadPoolExecutor | None = None

    def create(self) -> None:
        ip("netns", "add", self.namespace)
        ip("link", "add", self.port, "netns", self.lan.switch, "type", "veth", "peer", "eth0", "netns", self.namespace)
        ip("-n", self.lan.switch, "link", "set", self.port, "master", "br0", "up")
        ip("-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip("-n", self.namespace, "link", "set", "eth0", "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=self.namespace, initializer=_enter,
                                         initargs=(self.namespace,))

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` run in this host's network namespace (its sockets are this host's)."""
        assert self.thread is not None
        return self.thread.submit(function, *args).result()

    def cut(self) -> None:
        """Pulls the host's cable at the switch: its packets go nowhere, and nobody else's reach it."""
        ip("-n", self.lan.switch, "link", "set", self.port, "down")

    def mend(self) -> None:
        ip("-n", self.lan.switch, "link", "set", self.port, "up")

    def remove(self) -> None:
        if self.thread is not None:
            self.thread.shutdown(wait=False, cancel_futures=True)
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True)


class Lan:
    """`Lan().start()`, then `add("redis")`...: hosts at 10.<a>.<b>.1, .2 ... on one switch."""

    def __init__(self) -> None:
        serial = next(_serial)
        self.prefix = f"t2i{os.getpid() % 100000}{serial}"
        self.subnet = f"10.{200 + os.getpid() % 50}.{serial % 250}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: list[Host] = []

    def start(self) -> Self:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def add(self, name: str) -> Host:
        host = Host(self, name, f"{self.subnet}.{len(self.hosts) + 1}")
        host.create()
        self.hosts.append(host)
        return host

    def remove(self) -> None:
        for host in self.hosts:
            host.remove()
        subprocess.run(["ip", "netns", "delete", self.switch], capture_output=True)


class OnHost(ChildProcess):
    """A launcher's process run on `host` (`ip netns exec`), its readiness checked from `checker` (a host that
    reaches it: the host itself for a service on its loopback)."""

    def __init__(self, inner: ChildProcess, host: Host, checker: Host | None = None):
        super().__init__(inner.log_path)
        self.inner = inner
        self.host = host
        self.checker = checker or host
        self.label = f"{inner.label} on {host.name}"
        self.start_timeout = inner.start_timeout

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.host.namespace, *self.inner.command()]

    def environment(self) -> dict[str, str]:
        return self.inner.environment()

    def ready(self) -> bool:
        return self.checker.call(self.inner.ready)
