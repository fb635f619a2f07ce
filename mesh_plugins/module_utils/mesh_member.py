"""A node's view of the mesh, decided by the control node: what its files must hold, and a plan to get there.

Standard library only (and mesh_jail, the per-edge jails). Nothing here touches the file system:
``desired_entries`` says what must exist, the module reads what does exist into an ``Existing``, and
``plan`` compares the two.

Layout on a node (defaults): ``/etc/replimesh/mesh.json`` (the runner's config),
``/etc/replimesh/known_hosts`` and ``/etc/replimesh/profiles/PEER--FOLDER.prf`` (root-owned, out of every
peer's reach); per peer a login ``USER-PEER`` (see mesh_jail) with its key in the root-owned
``/etc/ssh/authorized_keys/USER-PEER``, its own chroot jail ``JAILS_DIR/USER-PEER``, and in that jail the
edge's Unison directory ``UNISON_DIR/PEER``, which the host's ``UNISON_DIR/PEER`` links to: one archive per
edge on each host, whichever end runs (pull-only runs converge only so).

Every run pulls: this node's own client, with its own profile, writes this node's disk, and the peer's
root is ``noupdate``/``nodeletion``/``nocreation``. The edge directory is the one place a peer's login
writes (its server end keeps its archive there), and this node's client reads it as ``UNISON``: so every
name Unison would read there as a setting (``PEER--FOLDER``, ``PEER--FOLDER.prf``, ``default``,
``default.prf``) is a root-owned link the peer cannot replace (the directory is root:USER 01770, sticky),
pointing at the profile in ``/etc/replimesh/profiles`` or at ``/dev/null``. Removing an edge removes
exactly its login, jail, profiles and archives.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import posixpath
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .mesh_cipher import check as cipher_problem
from .mesh_cipher import ssh_option as cipher_option
from .mesh_jail import NOTIFY_DIR, JailLayout, edge_user
from .mesh_jailbins import parents
from .mesh_names import LOCAL_IGNORE_FILE, MESH_USER_RE, NAME_RE, Folder

HEADER = "# Managed by replimesh (mesh_member): do not edit, the control node rewrites it."
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
# Addresses go into authorized_keys' from="..." and into ssh:// URLs: host names and IP addresses only.
ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
# Paths go unquoted into the forced command and into profiles.
PATH_RE = re.compile(r"/[^\s\"'\\,=\x00-\x1f\x7f]*")
PREF_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]* = [^\x00-\x1f\x7f]+")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_DELETIONS_RE = re.compile(r"[0-9]{1,9}|(?:100|[0-9]{1,2})%")
# The jail's forced command (the mesh_ssh role puts it in the template jail): the Unison server, or a
# change notice from the peer (watch mode), nothing else.
SERVE = "/bin/replimesh-serve"
# Unison preferences replimesh decides itself, or that no extra line may add (lower case; Unison's own
# spelling may differ): where the roots are and how the peer is reached, what the peer's end may run,
# what is kept of old versions, what may be deleted or overwritten, which files are synced, and files or
# commands outside the folders. Any preference whose name ends in UNSAFE is refused too.
# fmt: off
RESERVED_PREFS = frozenset([
    "root", "roots", "rootalias", "sshcmd", "sshargs", "rshcmd", "rshargs", "servercmd", "addversionno",
    "clienthostname", "socket", "listen", "host", "killserver", "testserver",
    "perms", "dontchmod", "owner", "group", "numericids", "links", "follow", "xattrs", "acl", "rsrc", "fat",
    "backup", "backuploc", "backuplocation", "backupdir", "backupnot", "maxbackups", "backupprefix",
    "backupsuffix", "backupcurrent", "backupcurrentnot",
    "noupdate", "nodeletion", "nocreation", "noupdatepartial", "nodeletionpartial", "nocreationpartial",
    "force", "forcepartial", "prefer", "preferpartial", "copyonconflict", "merge", "diff",
    "mountpoint", "confirmbigdel", "ignorearchives", "ignorelocks", "ignorecase", "ignoreinodenumbers",
    "include", "source", "ignore", "ignorenot", "path", "addprefsto", "batch", "auto", "repeat",
    "logfile", "log", "copyprog", "copyprogrest", "copythreshold", "fastcheck",
])
# fmt: on
# UNISON_DIR and STATE_DIR hold directories removed by name: never let them be a system directory.
# fmt: off
PROTECTED_DIRS = frozenset([
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log", "/var/tmp",
])
# fmt: on
FILE_MODE = 0o644
DIR_MODE = 0o755
PEER_DIR_MODE = 0o1770
# Where a peer's ssh leaves a change notice (watch mode): the login writes, this node's watcher reads
# (NOTIFY_DIR, mesh_jail's: a jail's removal takes the notices the login left there).
NOTIFY_DIR_MODE = 0o1770
# Names Unison reads in its UNISON directory as a profile when they exist: the profile's name with and
# without .prf, and default(.prf) when no profile is named. All held by root-owned links (see the module doc).
GUARDED_DEFAULTS = ("default", "default.prf")


class MemberError(ValueError):
    """The requested view of the mesh is invalid, or what exists on the node is in the way."""


@dataclass(frozen=True)
class Layout:
    config_file: str = "/etc/replimesh/mesh.json"
    authorized_keys_dir: str = "/etc/ssh/authorized_keys"
    known_hosts: str = "/etc/replimesh/known_hosts"
    unison_dir: str = "/var/lib/replimesh/unison"
    state_dir: str = "/var/lib/replimesh/state"
    log_file: str = "/var/log/replimesh/sync.log"
    key: str = "/var/lib/replimesh/.ssh/id_ed25519"
    unison_binary: str = "/usr/bin/unison"
    # Old versions of what this node's own pulls overwrote or deleted, BACKUP_DIR/FOLDER (in no jail).
    backup_dir: str = "/var/lib/replimesh/backups"
    # The edges' profiles, root-owned: no login of any peer reaches them.
    profiles_dir: str = "/etc/replimesh/profiles"
    # One chroot jail per peer, JAILS_DIR/LOGIN, made from the template jail (shell, Unison, libraries).
    jails_dir: str = "/var/lib/replimesh/jails"
    jail_template: str = "/var/lib/replimesh/jail"

    @property
    def control_path(self) -> str:
        """ssh's multiplexing sockets, one per peer: beside the key, in the mesh user's own 0700 directory
        (no login of any peer reaches it)."""
        return f"{posixpath.dirname(self.key)}/mux-%C"

    def peer_dir(self, peer: str) -> str:
        """The edge's Unison directory as the host sees it: a link into the peer's jail."""
        return f"{self.unison_dir}/{peer}"

    def jails(self) -> JailLayout:
        """Where each peer's jail and what is in it lie (mesh_jail's view of this layout)."""
        return JailLayout(self.jails_dir, self.jail_template, self.unison_dir, self.backup_dir)

    def authorized_keys(self, login: str) -> str:
        return f"{self.authorized_keys_dir}/{login}"

    def profile(self, peer: str, folder: str) -> str:
        return f"{self.profiles_dir}/{profile_name(peer, folder)}.prf"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    address: str
    public_key: str
    host_key: str
    port: int = 22
    initiator: bool = False
    active: bool = True
    # During a key rotation (rotate-keys.yml) the peer's new key, accepted beside its current one.
    next_public_key: str | None = None
    # The IP addresses sshd may see the peer connect from (with_sources: a host name resolved on the node);
    # empty: the address itself, an IP address.
    sources: tuple[str, ...] = ()

    def public_keys(self) -> list[str]:
        """The keys this peer may log in with: its current one, and the new one while it rotates."""
        keys = [normalize_key(self.public_key, f"{self.name}: public_key")]
        if self.next_public_key:
            keys.append(normalize_key(self.next_public_key, f"{self.name}: next_public_key"))
        return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class Settings:
    concurrency: int = 4
    timeout: int = 3600
    connect_timeout: int = 10
    server_alive_interval: int = 5
    # Seconds one ssh connection per peer stays open after its last use, shared by pulls and notices
    # (ssh's ControlPersist); 0: each pull and notice opens its own.
    ssh_control_persist: int = 60
    # The ciphers this node's ssh prefers, at the head of OpenSSH's own list (mesh_cipher); the module
    # fills them from the node's CPU when none are configured.
    ssh_ciphers: tuple[str, ...] = ()
    marker: str = ".replimesh-folder"
    unison_extra_prefs: tuple[str, ...] = ()
    backups: int = 0  # versions Unison keeps of each overwritten or deleted file; 0: none
    backups_max_age_days: int = 0  # the runner removes versions kept longer (0: no bound)
    backups_max_percent: int = 0  # and the oldest past this share of their disk (0: no bound)
    # The mass-deletion brake: at most this many files ("N") or this share of a folder ("N%") deleted by
    # one pull; more stops the edge until an operator allows it once.
    max_deletions: str = "50%"


@dataclass(frozen=True)
class MemberSpec:
    node: str
    folders: tuple[Folder, ...]
    peers: tuple[PeerSpec, ...]
    user: str = "replimesh"
    settings: Settings = field(default_factory=Settings)
    layout: Layout = field(default_factory=Layout)

    def login(self, peer: str) -> str:
        """The name ``peer`` logs in as here (and this node's name there is ``login(self.node)``)."""
        return edge_user(self.user, peer)


@dataclass(frozen=True)
class Entry:
    """A file (with content) or directory that must exist, with its mode and owner names."""

    path: str
    kind: str  # "file" | "dir" | "link" (content: the link's target)
    content: str | None
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class Stat:
    """What is at a path (from lstat): kind "file", "dir", "link" or "other"; content for regular files
    and the target for links."""

    kind: str
    mode: int
    owner: str
    group: str
    content: str | None = None


@dataclass(frozen=True)
class Existing:
    """What the module found: stats of the desired paths (absent ones left out) and the listed directories.

    ``unison_dirs``: names of the directories and links directly in UNISON_DIR; ``peer_files``: names of
    the non-directories in each current peer's directory;
    ``status``/``locks``: names in STATE_DIR/status and STATE_DIR/locks; ``key_files``: names in
    AUTHORIZED_KEYS_DIR. ``peer_files`` lists links too (the guards of the profile names).
    """

    stats: Mapping[str, Stat] = field(default_factory=dict)
    unison_dirs: tuple[str, ...] = ()
    key_files: tuple[str, ...] = ()
    peer_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    status: tuple[str, ...] = ()
    locks: tuple[str, ...] = ()
    profile_files: tuple[str, ...] = ()  # names in PROFILES_DIR


@dataclass(frozen=True)
class Removal:
    path: str
    kind: str  # "dir" (removed with its contents) | "file"


@dataclass(frozen=True)
class Plan:
    writes: tuple[Entry, ...] = ()  # files to (re)write whole, atomically
    mkdirs: tuple[Entry, ...] = ()  # directories to create (after removing what is in their place)
    fixes: tuple[Entry, ...] = ()  # right content, wrong mode or owner
    removes: tuple[Removal, ...] = ()
    peers_added: tuple[str, ...] = ()
    peers_removed: tuple[str, ...] = ()
    peers_kept: tuple[str, ...] = ()
    before: Mapping[str, str] = field(default_factory=dict)  # previous content of rewritten files

    @property
    def changed(self) -> bool:
        return bool(self.writes or self.mkdirs or self.fixes or self.removes)

    def diffs(self) -> list[dict[str, str]]:
        return [
            {
                "before_header": entry.path,
                "after_header": entry.path,
                "before": self.before.get(entry.path, ""),
                "after": entry.content or "",
            }
            for entry in self.writes
        ]


def normalize_key(value: str, where: str) -> str:
    """``TYPE BASE64`` from a public key line (a trailing comment is dropped); MemberError if not a key."""
    fields = value.split() if isinstance(value, str) else []
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise MemberError(
            f"{where} must be an OpenSSH public key 'TYPE BASE64' with TYPE one of {', '.join(KEY_TYPES)} "
            f"(got {str(value)[:60]!r})"
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    expected = len(fields[0]).to_bytes(4, "big") + fields[0].encode()
    if not blob.startswith(expected):
        raise MemberError(f"{where}: the base64 part is not a {fields[0]} key; copy the whole .pub line")
    return f"{fields[0]} {fields[1]}"


def _check(valid: bool, message: str) -> None:
    if not valid:
        raise MemberError(message)


def _name(value: object, where: str) -> None:
    valid = isinstance(value, str) and bool(NAME_RE.fullmatch(value))
    _check(
        valid, f"{where} {value!r} is not a valid name: use a-z, 0-9, '_' and '-' (a letter or digit first)"
    )


def _path(value: object, where: str) -> None:
    valid = isinstance(value, str) and bool(PATH_RE.fullmatch(value)) and posixpath.normpath(value) == value
    valid = valid and not value.startswith("//")  # type: ignore[union-attr]
    _check(
        valid, f"{where} must be a normalized absolute path without spaces, quotes or commas (got {value!r})"
    )


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _unique(names: list[str], what: str) -> None:
    dupes = sorted({name for name in names if names.count(name) > 1})
    _check(not dupes, f"{what}: each name must appear once; repeated: {', '.join(dupes)}")


def validate(spec: MemberSpec) -> None:
    """Raise MemberError naming the first thing wrong, before anything on the node is changed."""
    layout, settings = spec.layout, spec.settings
    _name(spec.node, "node")
    valid_user = isinstance(spec.user, str) and bool(MESH_USER_RE.fullmatch(spec.user))
    _check(
        valid_user,
        f"user {spec.user!r} is not a valid user name for the mesh (a-z, 0-9, '_', '-'; 21 characters at "
        "most, as each peer logs in as USER-PEER)",
    )
    for name in Layout.__dataclass_fields__:
        _path(getattr(layout, name), name)
    _check(
        layout.config_file != layout.known_hosts, "config_file and known_hosts must be two different files"
    )
    for name in ("unison_dir", "state_dir", "backup_dir", "jails_dir", "authorized_keys_dir", "profiles_dir"):
        _check(
            getattr(layout, name) not in PROTECTED_DIRS,
            f"{name} {getattr(layout, name)} is a system directory: replimesh removes old edges' entries "
            "from it by name; give it a directory of its own",
        )
    state = ("unison_dir", "backup_dir", "jails_dir", "jail_template", "profiles_dir")
    for one in state:
        for other in state:
            a, b = getattr(layout, one), getattr(layout, other)
            _check(one == other or not _inside(a, b), f"{one} {a} must not be or lie inside {other} {b}")
    _check(bool(spec.folders), "folders must list at least one folder")
    for i, folder in enumerate(spec.folders):
        where = f"folders[{i}] ({folder.name})"
        _name(folder.name, f"folders[{i}]: name")
        _path(folder.path, f"{where}: path")
        mesh_dirs = (layout.unison_dir, layout.state_dir, layout.backup_dir, layout.jails_dir)
        overlap = any(_inside(d, folder.path) or _inside(folder.path, d) for d in mesh_dirs)
        _check(
            folder.path != "/" and not overlap,
            f"{where}: path {folder.path} must not be /, nor hold or lie inside unison_dir, state_dir, "
            "backup_dir or jails_dir",
        )
        for pattern in folder.ignore:
            valid = isinstance(pattern, str) and bool(pattern.strip()) and not CONTROL_RE.search(pattern)
            _check(valid, f"{where}: ignore pattern {pattern!r} must be one line of text")
    _unique([folder.name for folder in spec.folders], "folders")
    for i, peer in enumerate(spec.peers):
        where = f"peers[{i}] ({peer.name})"
        _name(peer.name, f"peers[{i}]: name")
        _check(peer.name != spec.node, f"{where}: a node cannot be its own peer; remove it from peers")
        _check(
            isinstance(peer.address, str) and bool(ADDRESS_RE.fullmatch(peer.address)),
            f"{where}: address {peer.address!r} must be a host name or IP address, without quotes, spaces "
            "or commas (it goes into authorized_keys' from=...)",
        )
        valid_port = isinstance(peer.port, int) and not isinstance(peer.port, bool) and 0 < peer.port < 65536
        _check(valid_port, f"{where}: port must be 1-65535 (got {peer.port!r})")
        for flag in ("initiator", "active"):
            _check(isinstance(getattr(peer, flag), bool), f"{where}: {flag} must be true or false")
        normalize_key(peer.public_key, f"{where}: public_key")
        if peer.next_public_key is not None:
            normalize_key(peer.next_public_key, f"{where}: next_public_key")
        normalize_key(peer.host_key, f"{where}: host_key")
    _unique([peer.name for peer in spec.peers], "peers")
    for name in ("concurrency", "timeout", "connect_timeout", "server_alive_interval"):
        value = getattr(settings, name)
        valid = isinstance(value, int) and not isinstance(value, bool) and value > 0
        _check(valid, f"{name} must be a positive whole number (got {value!r})")
    persist = settings.ssh_control_persist
    valid = isinstance(persist, int) and not isinstance(persist, bool) and 0 <= persist <= 86400
    _check(valid, f"ssh_control_persist must be a whole number of seconds 0-86400 (got {persist!r})")
    problem = cipher_problem(settings.ssh_ciphers)
    _check(problem is None, problem or "")
    backups = settings.backups
    valid = isinstance(backups, int) and not isinstance(backups, bool) and 0 <= backups <= 1000
    _check(valid, f"backups must be a whole number 0-1000 (got {backups!r})")
    for name, top in (("backups_max_age_days", 36500), ("backups_max_percent", 100)):
        value = getattr(settings, name)
        valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top
        _check(valid, f"{name} must be a whole number 0-{top} (got {value!r})")
    _check(
        isinstance(settings.max_deletions, str) and bool(MAX_DELETIONS_RE.fullmatch(settings.max_deletions)),
        f"max_deletions must be a count (e.g. 100) or a percentage 0-100 (e.g. 50%) "
        f"(got {settings.max_deletions!r})",
    )
    marker = settings.marker
    valid = (
        isinstance(marker, str) and marker not in ("", ".", "..") and not re.search(r"[\s/\x00-\x1f]", marker)
    )
    _check(valid, f"marker {marker!r} must be a plain file name without spaces")
    for pref in settings.unison_extra_prefs:
        valid = isinstance(pref, str) and bool(PREF_RE.fullmatch(pref))
        _check(valid, f"unison_extra_prefs: {pref!r} must be one line 'name = value'")
        name = pref.split(" = ", 1)[0]
        _check(
            name.lower() not in RESERVED_PREFS and not name.lower().endswith("unsafe"),
            f"unison_extra_prefs: '{name} = ...' sets {name}, which replimesh decides itself (it guards the "
            "node's own safety); remove it",
        )


def url_host(address: str) -> str:
    """The address as it goes in an ssh:// URL: IPv6 literals in brackets."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def _sorted_peers(spec: MemberSpec) -> list[PeerSpec]:
    return sorted(spec.peers, key=lambda peer: peer.name)


def render_config(spec: MemberSpec) -> str:
    layout, settings = spec.layout, spec.settings
    data = {
        "node": spec.node,
        "user": spec.user,
        "login": spec.login(spec.node),
        "folders": [{"name": f.name, "path": f.path, "ignore": list(f.ignore)} for f in spec.folders],
        "peers": [
            {
                **{k: getattr(p, k) for k in ("name", "address", "port", "initiator", "active")},
                "notify_dir": layout.jails().root(spec.login(p.name)) + NOTIFY_DIR,
            }
            for p in _sorted_peers(spec)
        ],
        "concurrency": settings.concurrency,
        "timeout": settings.timeout,
        "connect_timeout": settings.connect_timeout,
        "marker": settings.marker,
        "unison": layout.unison_binary,
        "unison_dir": layout.unison_dir,
        "state_dir": layout.state_dir,
        "log_file": layout.log_file,
        "backups": settings.backups,
        "backup_dir": layout.backup_dir,
        "backups_max_age_days": settings.backups_max_age_days,
        "backups_max_percent": settings.backups_max_percent,
        "max_deletions": settings.max_deletions,
        "ssh_options": ssh_options(spec),
    }
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def render_authorized_keys(spec: MemberSpec, peer: PeerSpec) -> str:
    """The peer's keys file (sshd reads AUTHORIZED_KEYS_DIR/LOGIN): from its address, the jail's forced
    command, which serves Unison (read-only folders) or takes a change notice, nothing else."""
    folders = ",".join(folder.path for folder in spec.folders)  # paths hold no comma (_path)
    command = (
        f"UNISONLOCALHOSTNAME={spec.node} UNISON={spec.layout.peer_dir(peer.name)} "
        f"UNISON_BINARY={spec.layout.unison_binary} REPLIMESH_FOLDERS={folders} "
        f"REPLIMESH_MARKER={spec.settings.marker} exec {SERVE}"
    )
    # Two lines while the peer rotates its key, with the same restrictions: either key works.
    sources = ",".join(peer.sources or (peer.address,))
    lines = [HEADER] + [
        f'restrict,from="{sources}",command="{command}" {key} {spec.user}@{peer.name}'
        for key in peer.public_keys()
    ]
    return "\n".join(lines) + "\n"


def render_known_hosts(spec: MemberSpec) -> str:
    lines = [HEADER]
    lines += [f"{p.name} {normalize_key(p.host_key, f'{p.name}: host_key')}" for p in _sorted_peers(spec)]
    return "\n".join(lines) + "\n"


def ssh_options(spec: MemberSpec) -> list[str]:
    """ssh's options for every connection of this node to a peer (the profiles' pulls, the watcher's
    notices); the peer's name goes in as HostKeyAlias."""
    layout, settings = spec.layout, spec.settings
    options = [
        "-F", "none", "-i", layout.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={layout.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={settings.connect_timeout}",
        "-o", f"ServerAliveInterval={settings.server_alive_interval}", "-o", "ServerAliveCountMax=3",
        *cipher_option(settings.ssh_ciphers),
    ]  # fmt: skip
    if settings.ssh_control_persist > 0:
        # One authenticated connection per peer, kept a while and shared by every pull and notice to it:
        # a delivery pays no new handshake. Its socket lies beside the key (the mesh user's, mode 0700);
        # %C hashes this host, the peer's address, port and login, so each peer has its own.
        options += [
            "-o", "ControlMaster=auto", "-o", f"ControlPath={layout.control_path}",
            "-o", f"ControlPersist={settings.ssh_control_persist}",
        ]  # fmt: skip
    return options


def render_profile(spec: MemberSpec, peer: PeerSpec, folder: Folder) -> str:
    settings = spec.settings
    sshargs = " ".join([*ssh_options(spec), "-o", f"HostKeyAlias={peer.name}"])
    remote = f"ssh://{spec.login(spec.node)}@{url_host(peer.address)}:{peer.port}/{folder.path}"
    lines = [
        f"# Managed by replimesh (mesh_member): {spec.node} pulls folder {folder.name} from {peer.name}.",
        f"root = {folder.path}",
        f"root = {remote}",
        # Pull only: this run writes this node's disk and never the peer's (its jail shows the folders
        # read-only too). A change made here waits for the peer's own pull.
        f"noupdate = {remote}",
        f"nodeletion = {remote}",
        f"nocreation = {remote}",
        "batch = true",
        "auto = true",
        "prefer = newer",
        "copyonconflict = true",
        "times = true",
        "fastcheck = true",
        "log = false",
        "confirmbigdel = true",
        # Concurrent edges may deliver the same new file at once ("Destination updated during
        # synchronization"): Unison retries those paths, it never forces them.
        "retry = 2",
        # Modes travel, but never "writable by everyone": a file left world-writable on one node is not
        # made so on every other node (setuid and setgid never travel: Unison's default mask).
        "perms = 0o1775",
        f"mountpoint = {settings.marker}",
        f"ignore = Name {settings.marker}",
        f"ignore = Name {LOCAL_IGNORE_FILE}",
        *(f"ignore = {'Path' if '/' in p else 'Name'} {p}" for p in folder.ignore),
        f"sshargs = {sshargs}",
        *backup_prefs(spec, folder),
        *settings.unison_extra_prefs,
    ]
    return "\n".join(lines) + "\n"


def backup_prefs(spec: MemberSpec, folder: Folder) -> list[str]:
    """Unison keeps the old version of every file a pull overwrites or deletes here, outside the synced
    tree, in BACKUP_DIR/FOLDER on the host: in no jail, so no peer reaches, deletes or disables them."""
    if spec.settings.backups <= 0:
        return []
    return [
        "backup = Name *",
        "backuplocation = central",
        f"backupdir = {spec.layout.backup_dir}/{folder.name}",
        f"maxbackups = {spec.settings.backups}",
    ]


def desired_entries(spec: MemberSpec) -> list[Entry]:
    """Everything that must exist, parents before children."""
    layout, user, jails = spec.layout, spec.user, spec.layout.jails()
    entries = [
        Entry(layout.config_file, "file", render_config(spec), FILE_MODE, "root", "root"),
        Entry(layout.known_hosts, "file", render_known_hosts(spec), FILE_MODE, "root", "root"),
        Entry(layout.profiles_dir, "dir", None, DIR_MODE, "root", "root"),
    ]
    # A jail's own directories (sshd wants every one root-owned, writable by root only), the same in every
    # jail; the folders' mount points are the mesh_jail module_utils' (never chowned through a mount).
    above = parents(f"{layout.unison_dir}/x") + [p for folder in spec.folders for p in parents(folder.path)]
    own_dirs = ["", *dict.fromkeys(above)]
    for peer in _sorted_peers(spec):
        login = spec.login(peer.name)
        jail = jails.root(login)
        keys = render_authorized_keys(spec, peer)
        entries.append(Entry(layout.authorized_keys(login), "file", keys, FILE_MODE, "root", "root"))
        entries += [Entry(jail + p, "dir", None, DIR_MODE, "root", "root") for p in own_dirs]
        archive = jails.archive_dir(login, peer.name)
        entries.append(Entry(archive, "dir", None, PEER_DIR_MODE, "root", user))
        entries.append(Entry(layout.peer_dir(peer.name), "link", archive, 0o777, "root", "root"))
        entries.append(Entry(jail + NOTIFY_DIR, "dir", None, NOTIFY_DIR_MODE, "root", user))
        entries += [
            Entry(f"{archive}/{name}", "link", "/dev/null", 0o777, "root", "root")
            for name in GUARDED_DEFAULTS
        ]
        for folder in spec.folders:
            path = layout.profile(peer.name, folder.name)
            entries.append(Entry(path, "file", render_profile(spec, peer, folder), FILE_MODE, "root", "root"))
            name = profile_name(peer.name, folder.name)
            entries += [
                Entry(f"{archive}/{guard}", "link", path, 0o777, "root", "root")
                for guard in (name, f"{name}.prf")
            ]
    return entries


def profile_name(peer: str, folder: str) -> str:
    """The name the runner gives Unison (``unison PEER--FOLDER``)."""
    return f"{peer}--{folder}"


def _stale(spec: MemberSpec, existing: Existing) -> list[Removal]:
    layout = spec.layout
    peers = {peer.name for peer in spec.peers}
    removes = [
        Removal(layout.peer_dir(name), "dir")
        for name in sorted(existing.unison_dirs)
        if NAME_RE.fullmatch(name) and name not in peers
    ]
    # Profiles, and their guards in the edge directories, of folders (or peers) no longer configured.
    wanted = {profile_name(peer.name, folder.name) for peer in spec.peers for folder in spec.folders}
    profile_re = re.compile(r"([a-z0-9][a-z0-9_-]*--[a-z0-9][a-z0-9_-]*)(\.prf)?")
    removes += [
        Removal(f"{layout.profiles_dir}/{name}", "file")
        for name in sorted(existing.profile_files)
        if (match := profile_re.fullmatch(name)) and match.group(2) and match.group(1) not in wanted
    ]
    for peer in sorted(peers & set(existing.peer_files)):
        removes += [
            Removal(f"{layout.peer_dir(peer)}/{name}", "file")
            for name in sorted(existing.peer_files[peer])
            if (match := profile_re.fullmatch(name))
            and match.group(1).startswith(f"{peer}--")
            and match.group(1) not in wanted
        ]
    # Keys files of logins no peer has any more, and the one shared file of the single-jail layout.
    logins = {spec.login(name) for name in peers}
    removes += [
        Removal(layout.authorized_keys(name), "file")
        for name in sorted(existing.key_files)
        if name not in logins and (name == spec.user or name.startswith(f"{spec.user}-"))
    ]
    # Status and lock files of any edge that is gone, whether or not its directory was still there.
    for subdir, names, suffix in (("status", existing.status, ".json"), ("locks", existing.locks, ".lock")):
        for name in sorted(names):
            stem = name[: -len(suffix)] if name.endswith(suffix) else ""
            if NAME_RE.fullmatch(stem) and stem not in peers:
                removes.append(Removal(f"{layout.state_dir}/{subdir}/{name}", "file"))
    return removes


def plan(spec: MemberSpec, existing: Existing) -> Plan:
    """Compare what must exist with what does; the plan says what to write, create, fix and remove."""
    writes: list[Entry] = []
    mkdirs: list[Entry] = []
    fixes: list[Entry] = []
    removes = _stale(spec, existing)
    before: dict[str, str] = {}
    for entry in desired_entries(spec):
        stat = existing.stats.get(entry.path)
        if entry.kind == "link":
            if stat is None or stat.kind != "link" or stat.content != entry.content:
                if stat is not None:  # an edge directory of the single-jail layout: its archives go
                    removes.append(Removal(entry.path, "dir" if stat.kind == "dir" else "file"))
                writes.append(entry)
            continue
        if entry.kind == "dir":
            if stat is None:
                mkdirs.append(entry)
            elif stat.kind != "dir":
                # A file or symlink where an edge's directory belongs: never write through it.
                removes.append(Removal(entry.path, "file"))
                mkdirs.append(entry)
            elif (stat.mode, stat.owner, stat.group) != (entry.mode, entry.owner, entry.group):
                fixes.append(entry)
            continue
        if stat is not None and stat.kind == "dir":
            raise MemberError(f"{entry.path} is a directory where replimesh writes a file: move it away")
        if stat is None or stat.kind != "file" or stat.content != entry.content:
            writes.append(entry)
            if stat is not None and stat.content is not None:
                before[entry.path] = stat.content
        elif (stat.mode, stat.owner, stat.group) != (entry.mode, entry.owner, entry.group):
            fixes.append(entry)
    desired = {peer.name for peer in spec.peers}
    had = {name for name in existing.unison_dirs if NAME_RE.fullmatch(name)}
    return Plan(
        writes=tuple(writes),
        mkdirs=tuple(mkdirs),
        fixes=tuple(fixes),
        removes=tuple(removes),
        peers_added=tuple(sorted(desired - had)),
        peers_removed=tuple(sorted(had - desired)),
        peers_kept=tuple(sorted(desired & had)),
        before=before,
    )


def resolve_address(
    address: str, getaddrinfo: Callable[..., list[Any]] = socket.getaddrinfo
) -> tuple[str, ...]:
    """The IP addresses a host connects from, as far as this node can tell: the address itself when it is an
    IP address, else every address its host name resolves to here. sshd matches authorized_keys' from= against
    the client's IP address (UseDNS is off by default), so a host name there would never match."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        infos = getaddrinfo(address, None, 0, socket.SOCK_STREAM)
        return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    return (address,)


def with_sources(spec: MemberSpec, resolve: Callable[[str], tuple[str, ...]] = resolve_address) -> MemberSpec:
    """The spec with each peer's source addresses (its host name resolved on this node)."""
    peers = []
    for peer in spec.peers:
        try:
            sources = resolve(peer.address)
        except (OSError, UnicodeError) as exc:
            raise MemberError(
                f"peer {peer.name}: host name {peer.address} does not resolve on {spec.node} ({exc}): fix "
                "DNS or /etc/hosts there, or write the peer's IP address in the mesh file"
            ) from exc
        if not sources:
            raise MemberError(
                f"peer {peer.name}: host name {peer.address} resolves to no address on {spec.node}"
            )
        peers.append(replace(peer, sources=sources))
    return replace(spec, peers=tuple(peers))


def spec_from_params(params: Mapping[str, Any]) -> MemberSpec:
    """A validated MemberSpec from the module's parameters (names as in its argument_spec; None = default)."""

    def get(source: Mapping[str, Any], name: str, default: Any) -> Any:
        return default if source.get(name) is None else source[name]

    settings, layout = Settings(), Layout()
    try:
        folders = tuple(
            Folder(f.get("name"), f.get("path"), tuple(get(f, "ignore", ()))) for f in params["folders"]
        )
        peers = tuple(
            PeerSpec(
                **{k: p.get(k) for k in ("name", "address", "public_key", "host_key", "next_public_key")},
                **{k: get(p, k, v) for k, v in (("port", 22), ("initiator", False), ("active", True))},
            )
            for p in params["peers"]
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise MemberError(f"folders and peers must be lists of mappings ({exc})") from exc
    values = {name: get(params, name, getattr(settings, name)) for name in Settings.__dataclass_fields__}
    spec = MemberSpec(
        node=params.get("node"),  # type: ignore[arg-type]
        user=get(params, "user", "replimesh"),
        folders=folders,
        peers=peers,
        settings=Settings(
            **{**values, **{name: tuple(values[name]) for name in ("unison_extra_prefs", "ssh_ciphers")}}
        ),
        layout=Layout(
            **{name: get(params, name, getattr(layout, name)) for name in Layout.__dataclass_fields__}
        ),
    )
    validate(spec)
    return spec
