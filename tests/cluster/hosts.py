"""Hosts made of Linux network namespaces on one private bridge (iproute2, as root).

One run owns every name that starts with its prefix `nf<pid as 6 hex digits>`: the
namespaces `<prefix>-<role>` (one per host, plus `<prefix>-switch` holding the bridge) and
the root namespace's veth `<prefix>r`. Another run on the same machine (a developer's and
CI's) has another pid, hence other names and another /24 inside 10.0.0.0/8; a run that
crashed leaves names whose pid is dead, and `remove_leftovers` deletes them.

The hosts have no default route and the bridge has no uplink: a packet from a host reaches
only the other hosts and the root namespace's veth (the test process, which is the client).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

IP_TIMEOUT_S = 15
PREFIX_RE = re.compile(r"^nf([0-9a-f]{6})(?:-|r)")
# 10.160.0.0/11: 8192 /24s to choose from; the run's pid picks where the search starts.
POOL = ipaddress.IPv4Network("10.160.0.0/11")


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def run_prefix(pid: int) -> str:
    return f"nf{pid:06x}"


def _pid_alive(pid: int) -> bool:
    """True while the run's process exists and is not a zombie (killed, not yet reaped)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def root_links() -> list[str]:
    names = []
    for line in _ip("-o", "link", "show").splitlines():
        # "12: nf00abcdr@if3: <...>"
        names.append(line.split(":", 2)[1].strip().split("@")[0])
    return names


def namespace_pids(netns: str) -> list[int]:
    return [int(p) for p in _ip("netns", "pids", netns, check=False).split()]


def kill_namespace_processes(netns: str, timeout: float = 20) -> None:
    """SIGTERM every process in the namespace, SIGKILL what is left after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        pids = namespace_pids(netns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and namespace_pids(netns):
            time.sleep(0.2)
        if not namespace_pids(netns):
            return
    raise RuntimeError(f"processes still in {netns} after SIGKILL: {namespace_pids(netns)}")


def sigkill_namespace(netns: str, timeout: float = 10) -> list[int]:
    """SIGKILL every process in the namespace until none is left (what a power cut does); the pids."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while pids := namespace_pids(netns):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes still in {netns} after SIGKILL: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return sorted(set(killed))


def _delete(prefix: str) -> None:
    for ns in namespaces():
        if ns.startswith(prefix + "-"):
            kill_namespace_processes(ns)
            _ip("netns", "delete", ns, check=False)
    for link in root_links():
        if link.startswith(prefix):
            _ip("link", "delete", link, check=False)


def remove_leftovers() -> list[str]:
    """Delete the namespaces and veths of earlier runs whose process is gone; their prefixes."""
    prefixes = set()
    for name in namespaces() + root_links():
        match = PREFIX_RE.match(name)
        if match and not _pid_alive(int(match.group(1), 16)):
            prefixes.add(match.group(0)[:8])
    for prefix in sorted(prefixes):
        _delete(prefix)
    return sorted(prefixes)


def _subnets_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for line in _ip("-4", "-o", "addr", "show").splitlines() + _ip("-4", "route", "show").splitlines():
        for token in line.split():
            if "/" in token or token[:1].isdigit():
                try:
                    used.append(ipaddress.IPv4Network(token, strict=False))
                except ValueError:
                    continue
    return used


def choose_subnet(pid: int) -> ipaddress.IPv4Network:
    """A /24 of POOL that no address or route of the root namespace overlaps."""
    candidates = list(POOL.subnets(new_prefix=24))
    used = _subnets_in_use()
    start = pid % len(candidates)
    for i in range(len(candidates)):
        subnet = candidates[(start + i) % len(candidates)]
        if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
            return subnet
    raise RuntimeError(f"no free /24 left in {POOL}")


@dataclass
class Host:
    role: str
    netns: str
    address: str

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass
class Network:
    """A bridge in `<prefix>-switch`, one namespace per host, and a veth from the root namespace."""

    prefix: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    @property
    def root_address(self) -> str:
        return str(self.subnet[1])

    @classmethod
    def create(cls, roles: list[str], pid: int | None = None) -> Network:
        pid = os.getpid() if pid is None else pid
        network = cls(run_prefix(pid), choose_subnet(pid))
        try:
            network._build(roles)
        except BaseException:
            network.destroy()
            raise
        return network

    def _build(self, roles: list[str]) -> None:
        sw = self.switch
        _ip("netns", "add", sw)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        # The test process's way onto the bridge.
        root_if, root_peer = f"{self.prefix}r", f"{self.prefix}rp"
        _ip("link", "add", root_if, "type", "veth", "peer", root_peer, "netns", sw)
        self._plug(root_peer)
        _ip("addr", "add", f"{self.root_address}/{self.subnet.prefixlen}", "dev", root_if)
        _ip("link", "set", root_if, "up")
        for index, role in enumerate(roles):
            netns = f"{self.prefix}-{role}"
            address = str(self.subnet[index + 2])
            _ip("netns", "add", netns)
            peer = f"{self.prefix}{index:02d}p"
            _ip("link", "add", "eth0", "netns", netns, "type", "veth", "peer", peer, "netns", sw)
            self._plug(peer)
            _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            self.hosts[role] = Host(role, netns, address)

    def _plug(self, port: str) -> None:
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")

    def routes(self, role: str) -> list[str]:
        return [line for line in _ip("-n", self.hosts[role].netns, "-4", "route").splitlines() if line]

    def destroy(self) -> None:
        """Every process in the hosts stopped, every namespace and veth of this run deleted."""
        _delete(self.prefix)
        left = [n for n in namespaces() + root_links() if n.startswith(self.prefix)]
        if left:
            raise RuntimeError(f"left behind after cleanup: {left}")
