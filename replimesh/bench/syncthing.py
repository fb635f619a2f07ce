"""Debian's Syncthing on the lab hosts: a full mesh of all nodes sharing one folder, kept in the lab.

Config per node: `syncthing generate` makes the node's key and config; `configure` (pure, unit-tested)
then rewrites it: every node a device at `tcp://<lab ip>:22000`, one shared folder, and everything that
would look outside the lab off (global and local discovery, relays, NAT, STUN, usage and crash
reporting, auto-upgrade). The REST API listens on 127.0.0.1 inside each node, with the generated API key.
Lab hosts have no systemd: Syncthing runs as a background process started with docker exec, as the
Debian unit runs it (`serve --no-browser --no-restart`), and is stopped by its PID.
"""

from __future__ import annotations

import copy
import json
import shlex
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from replimesh.bench.probe import ProbeError, dexec, py, sh
from replimesh.lab.lab import Host

HOME = "/var/lib/stbench"
FOLDER = "/srv/stbench/shared"
STAGING = "/srv/stbench/staging"  # same filesystem as FOLDER: a rename into the folder is atomic
FOLDER_ID = "bench"
PORT = 22000
GUI = "127.0.0.1:8384"
OPTIONS_OFF = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "startBrowser": "false",
    "urAccepted": "-1",
    "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0",
    "stunKeepaliveStartS": "0",
    "stunKeepaliveMinS": "0",
}

# Inside a node: call the REST API (METHOD PATH [JSON BODY]) with the key from the config; print the body.
REST = r"""
import json, sys, urllib.request, xml.etree.ElementTree as ET
key = ET.parse(sys.argv[1]).getroot().find("gui/apikey").text
method, path = sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request("http://127.0.0.1:8384" + path, data=body, method=method,
                             headers={"X-API-Key": key, "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as resp:
    sys.stdout.write(resp.read().decode())
"""


@dataclass(frozen=True)
class Device:
    name: str
    device_id: str
    address: str


def configure(
    config_xml: str, me: str, devices: Sequence[Device], fs_watcher_delay_s: int | None = None
) -> str:
    """The node's generated config.xml, rewritten for the bench (see the module docstring)."""
    root = ET.fromstring(config_xml)
    defaults = root.find("defaults")
    if defaults is None:
        raise ValueError("config.xml has no <defaults> (not a Syncthing >= 1.16 config)")
    device_template = defaults.find("device")
    folder_template = defaults.find("folder")
    if device_template is None or folder_template is None:
        raise ValueError("config.xml <defaults> lacks a device or folder template")
    for old in root.findall("device") + root.findall("folder"):
        root.remove(old)
    position = 0
    folder = copy.deepcopy(folder_template)
    folder.set("id", FOLDER_ID)
    folder.set("label", FOLDER_ID)
    folder.set("path", FOLDER)
    if fs_watcher_delay_s is not None:
        folder.set("fsWatcherDelayS", str(fs_watcher_delay_s))
    for old in folder.findall("device"):
        folder.remove(old)
    for index, dev in enumerate(devices):
        share = ET.Element("device", {"id": dev.device_id, "introducedBy": ""})
        ET.SubElement(share, "encryptionPassword").text = ""
        folder.insert(index, share)
    root.insert(position, folder)
    for dev in devices:
        position += 1
        node = copy.deepcopy(device_template)
        node.set("id", dev.device_id)
        node.set("name", dev.name)
        for old in node.findall("address"):
            node.remove(old)
        ET.SubElement(node, "address").text = "dynamic" if dev.name == me else f"tcp://{dev.address}:{PORT}"
        root.insert(position, node)
    gui = root.find("gui")
    if gui is not None and gui.find("address") is not None:
        gui.find("address").text = GUI  # type: ignore[union-attr]
    options = root.find("options")
    if options is None:
        raise ValueError("config.xml has no <options>")
    for name, value in {**OPTIONS_OFF, "listenAddress": f"tcp://0.0.0.0:{PORT}"}.items():
        elems = options.findall(name)
        for extra in elems[1:]:
            options.remove(extra)
        elem = elems[0] if elems else ET.SubElement(options, name)
        elem.text = value
    return ET.tostring(root, encoding="unicode")


class Syncthing:
    """Syncthing on a set of lab hosts: install, configure, start, ask, stop."""

    def __init__(self, hosts: Sequence[Host], log: object = print) -> None:
        self.hosts = list(hosts)
        self.log = log
        self.pids: dict[str, int] = {}

    def install(self) -> str:
        """apt-get install syncthing from the lab's own repository on every host; returns its version."""
        script = (
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null 2>&1 || true; "
            "apt-get install -y -q --no-install-recommends syncthing >/dev/null"
        )
        for host in self.hosts:
            sh(host, script, timeout=300)
        return dexec(self.hosts[0], ["syncthing", "--version"]).strip()

    def configure(self, fs_watcher_delay_s: int | None = None) -> None:
        devices = []
        for host in self.hosts:
            sh(host, f"rm -rf {HOME} {FOLDER} {STAGING}; mkdir -p {FOLDER}/.stfolder {STAGING}")
            dexec(
                host,
                ["syncthing", "generate", f"--home={HOME}", "--no-default-folder", "--skip-port-probing"],
            )
            device_id = dexec(host, ["syncthing", "serve", f"--home={HOME}", "--device-id"]).strip()
            devices.append(Device(host.name, device_id, host.address))
        for host in self.hosts:
            xml = dexec(host, ["cat", f"{HOME}/config.xml"])
            text = configure(xml, host.name, devices, fs_watcher_delay_s)
            sh(host, f"cat > {HOME}/config.xml <<'__EOF__'\n{text}\n__EOF__")

    def start(self) -> None:
        for host in self.hosts:
            cmd = (
                f"STNOUPGRADE=1 nohup syncthing serve --home={HOME} --no-browser --no-restart --logflags=0 "
                f"> {HOME}/syncthing.log 2>&1 < /dev/null & echo $!"
            )
            self.pids[host.name] = int(sh(host, cmd).strip())

    def rest(self, host: Host, method: str, path: str, body: Mapping[str, object] | None = None) -> object:
        args = [f"{HOME}/config.xml", method, path] + ([json.dumps(body)] if body is not None else [])
        out = py(host, REST, *args, timeout=30)
        return json.loads(out) if out.strip() else None

    def wait_ready(self, timeout: float = 180) -> float:
        """Until every node is connected to every other and the folder is idle; seconds it took."""
        start = time.monotonic()
        pending = list(self.hosts)
        want = len(self.hosts) - 1
        last = ""
        while pending and time.monotonic() - start < timeout:
            still = []
            for host in pending:
                try:
                    conns = self.rest(host, "GET", "/rest/system/connections")
                    status = self.rest(host, "GET", f"/rest/db/status?folder={FOLDER_ID}")
                except ProbeError as exc:
                    last = str(exc)
                    still.append(host)
                    continue
                connected = sum(1 for c in conns["connections"].values() if c.get("connected"))  # type: ignore[index]
                state = status.get("state")  # type: ignore[union-attr]
                if connected < want or state != "idle" or status.get("needTotalItems"):  # type: ignore[union-attr]
                    last = f"{host.name}: {connected}/{want} connected, folder {state}"
                    still.append(host)
            pending = still
            if pending:
                time.sleep(1)
        if pending:
            raise ProbeError(f"Syncthing not ready within {timeout:.0f} s ({last})")
        return round(time.monotonic() - start, 1)

    def set_watcher_delay(self, seconds: int) -> None:
        for host in self.hosts:
            self.rest(host, "PATCH", f"/rest/config/folders/{FOLDER_ID}", {"fsWatcherDelayS": seconds})

    def clear(self) -> None:
        """Empty the shared folder on node1 (the deletions propagate) and wait for every node to be idle."""
        sh(self.hosts[0], f"find {FOLDER} -mindepth 1 -maxdepth 1 ! -name .stfolder -exec rm -rf {{}} +")

    def stop(self) -> None:
        for host in self.hosts:
            pid = self.pids.pop(host.name, None)
            if pid is None:
                continue
            # Bounded: TERM, then KILL after 10 s, all by the PID we started.
            script = (
                f"kill {pid} 2>/dev/null; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 100 ]; "
                f"do sleep 0.1; i=$((i+1)); done; kill -9 {pid} 2>/dev/null; true"
            )
            try:
                sh(host, script, timeout=30)
            except ProbeError as exc:
                self.log(f"could not stop syncthing on {host.name}: {exc}")  # type: ignore[operator]

    def remove_data(self) -> None:
        for host in self.hosts:
            sh(host, f"rm -rf {shlex.quote(FOLDER)} {STAGING}")
