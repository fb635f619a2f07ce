"""mesh_member's core: validation, the rendered files, and the plan against what exists on a node."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jail import edge_user
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_member import (
    HEADER,
    RESERVED_PREFS,
    Entry,
    Existing,
    Folder,
    Layout,
    MemberError,
    MemberSpec,
    PeerSpec,
    Settings,
    Stat,
    desired_entries,
    normalize_key,
    plan,
    render_authorized_keys,
    render_config,
    render_known_hosts,
    render_profile,
    resolve_address,
    spec_from_params,
    ssh_options,
    url_host,
    validate,
    with_sources,
)
from replimesh_node import mesh_runner

U = "/var/lib/replimesh/unison"
S = "/var/lib/replimesh/state"
K = "/etc/ssh/authorized_keys"
J = "/var/lib/replimesh/jails"
B = "/var/lib/replimesh/backups"
P = "/etc/replimesh/profiles"


def key(kind: str = "ssh-ed25519", seed: int = 1) -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + bytes([seed]) * 32
    return f"{kind} {base64.b64encode(blob).decode()}"


def peer(name: str, address: str = "", **kw: object) -> PeerSpec:
    seed = sum(name.encode()) % 256
    fields = {"public_key": key(seed=seed), "host_key": key("ecdsa-sha2-nistp256", seed), **kw}
    return PeerSpec(name=name, address=address or f"10.0.0.{seed % 250 + 1}", **fields)  # type: ignore[arg-type]


def make_spec(peers: tuple[PeerSpec, ...] | None = None, **kw: object) -> MemberSpec:
    folders = (Folder("shared", "/srv/replimesh/shared", ("*.tmp", "cache/build")),)
    fields = {
        "node": "node1",
        "folders": folders,
        "peers": (peer("node3", initiator=True), peer("node2")) if peers is None else peers,
        **kw,
    }
    return MemberSpec(**fields)  # type: ignore[arg-type]


def settled(spec: MemberSpec) -> Existing:
    """What a node looks like once the plan for `spec` has been applied."""
    stats = {
        e.path: Stat(e.kind, e.mode, e.owner, e.group, e.content if e.kind in ("file", "link") else None)
        for e in desired_entries(spec)
    }
    names = tuple(p.name for p in spec.peers)
    return Existing(
        stats=stats,
        unison_dirs=names,
        key_files=tuple(sorted(spec.login(n) for n in names)),
        peer_files={p.name: guards(p.name, [f.name for f in spec.folders]) for p in spec.peers},
        status=tuple(f"{n}.json" for n in names),
        locks=tuple(f"{n}.lock" for n in names),
        profile_files=tuple(sorted(f"{p.name}--{f.name}.prf" for p in spec.peers for f in spec.folders)),
    )


def guards(peer_name: str, folders: list[str]) -> tuple[str, ...]:
    """The root-owned links in an edge's Unison directory: every name Unison reads as a profile there."""
    names = [f"{peer_name}--{f}{ext}" for f in folders for ext in ("", ".prf")]
    return tuple(sorted(["default", "default.prf", *names]))


# --- rendering ------------------------------------------------------------------------------------------


def test_config_is_sorted_indented_json_the_runner_accepts() -> None:
    spec = make_spec(peers=(peer("node3", initiator=True), peer("node2", active=False, port=2222)))
    text = render_config(spec)
    data = json.loads(text)
    assert text.endswith("}\n") and text == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert data["node"] == "node1" and data["user"] == "replimesh"
    # This node logs in on its peers as replimesh-node1: each peer jails that login on its own.
    assert data["login"] == "replimesh-node1"
    assert [p["name"] for p in data["peers"]] == ["node2", "node3"]
    assert data["peers"][0] == {
        "name": "node2",
        "address": peer("node2").address,
        "port": 2222,
        "initiator": False,
        "active": False,
        # Where node2's change notices land here: the notice directory of node2's jail.
        "notify_dir": f"{J}/replimesh-node2/notify",
    }
    assert data["peers"][1]["notify_dir"] == f"{J}/replimesh-node3/notify"
    assert data["max_deletions"] == "50%"
    assert (
        json.loads(render_config(make_spec(settings=Settings(max_deletions="200"))))["max_deletions"] == "200"
    )
    assert data["folders"] == [
        {"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp", "cache/build"]}
    ]
    assert {k: data[k] for k in ("concurrency", "timeout", "connect_timeout", "marker")} == {
        "concurrency": 4,
        "timeout": 3600,
        "connect_timeout": 10,
        "marker": ".replimesh-folder",
    }
    assert (data["unison"], data["unison_dir"], data["state_dir"], data["log_file"]) == (
        "/usr/bin/unison",
        U,
        S,
        "/var/log/replimesh/sync.log",
    )
    config = mesh_runner.parse_config(data)
    assert [p.name for p in config.peers] == ["node2", "node3"] and config.login == "replimesh-node1"
    assert config.max_deletions == "50%" and config.peers[0].notify_dir == f"{J}/replimesh-node2/notify"
    assert mesh_runner.remote_root(config, config.peers[0], config.folders[0]).startswith(
        f"ssh://replimesh-node1@{peer('node2').address}:2222//"
    )


def test_the_login_is_the_users_name_for_the_node_and_stays_short() -> None:
    spec = make_spec(user="mesh")
    assert spec.login("node2") == "mesh-node2"
    long_node = "n" * 40
    assert json.loads(render_config(make_spec(node=long_node, peers=())))["login"] == edge_user(
        "replimesh", long_node
    )
    assert len(edge_user("replimesh", long_node)) <= 32
    # The profile's remote root names this node's login on the peer, not the mesh user.
    assert "root = ssh://mesh-node1@" in render_profile(spec, peer("node2"), spec.folders[0])


def test_config_with_no_peers() -> None:
    assert json.loads(render_config(make_spec(peers=())))["peers"] == []


def test_authorized_keys_one_file_per_peer_with_its_own_restricted_line_and_unison_dir() -> None:
    node3, node2 = peer("node3", "10.0.0.13"), peer("node2", "10.0.0.12", active=False)
    spec = make_spec(peers=(node3, node2))
    assert render_authorized_keys(spec, node2) == (
        f"{HEADER}\n"
        'restrict,from="10.0.0.12",command="UNISONLOCALHOSTNAME=node1 UNISON=/var/lib/replimesh/unison/node2 '
        "UNISON_BINARY=/usr/bin/unison REPLIMESH_FOLDERS=/srv/replimesh/shared "
        "REPLIMESH_MARKER=.replimesh-folder exec /bin/replimesh-serve"
        f'" {node2.public_key} replimesh@node2\n'
    )
    two = make_spec(folders=(Folder("a", "/srv/a"), Folder("b", "/data/b")))
    # The folders whose disk guards the forced command checks.
    assert " REPLIMESH_FOLDERS=/srv/a,/data/b " in render_authorized_keys(two, two.peers[0])
    lines = render_authorized_keys(spec, node3).splitlines()
    assert lines[0] == HEADER and len(lines) == 2
    assert lines[1].startswith(
        'restrict,from="10.0.0.13",command="UNISONLOCALHOSTNAME=node1 UNISON=' + U + "/node3 "
    )
    assert "node2" not in render_authorized_keys(spec, node3)  # one peer's key never opens another's login


def test_authorized_keys_drops_the_key_comment_and_uses_the_mesh_user() -> None:
    spec = make_spec(peers=(peer("node2", public_key=key() + " replimesh@node2 extra\n"),), user="mesh")
    assert (
        render_authorized_keys(spec, spec.peers[0])
        .splitlines()[1]
        .endswith(f'/bin/replimesh-serve" {key()} mesh@node2')
    )


def test_a_rotating_peer_is_accepted_with_either_key_under_the_same_restrictions() -> None:
    rotating = peer("node2", "10.0.0.12", next_public_key=key(seed=99) + " replimesh@node2")
    spec = make_spec(peers=(rotating, peer("node3", "10.0.0.13")))
    lines = render_authorized_keys(spec, rotating).splitlines()
    node2 = [line for line in lines if line.endswith("replimesh@node2")]
    assert [line.split('" ')[1] for line in node2] == [
        f"{rotating.public_key} replimesh@node2",
        f"{key(seed=99)} replimesh@node2",
    ]
    # Same from=, same forced command with the edge's own Unison dir: only the key differs.
    assert len({line.split('" ')[0] for line in node2}) == 1
    assert len(lines) == 1 + 2
    assert len(render_authorized_keys(spec, spec.peers[1]).splitlines()) == 1 + 1


def test_a_next_key_equal_to_the_current_one_gives_one_line() -> None:
    spec = make_spec(peers=(peer("node2", next_public_key=peer("node2").public_key),))
    assert len(render_authorized_keys(spec, spec.peers[0]).splitlines()) == 2


def test_a_bad_next_key_is_refused_by_name() -> None:
    with pytest.raises(MemberError, match=r"peers\[0\] \(node2\): next_public_key"):
        validate(make_spec(peers=(peer("node2", next_public_key="ssh-dss AAAA"),)))


def test_next_public_key_comes_through_the_module_parameters() -> None:
    params = {
        "node": "node1",
        "folders": [{"name": "shared", "path": "/srv/replimesh/shared"}],
        "peers": [
            {"name": "node2", "address": "10.0.0.2", "public_key": key(), "host_key": key(),
             "next_public_key": key(seed=5)},
            {"name": "node3", "address": "10.0.0.3", "public_key": key(seed=3), "host_key": key()},
        ],
    }  # fmt: skip
    spec = spec_from_params(params)
    assert [p.next_public_key for p in spec.peers] == [key(seed=5), None]
    assert [p.public_keys() for p in spec.peers] == [[key(), key(seed=5)], [key(seed=3)]]


def test_known_hosts_keyed_by_peer_name() -> None:
    spec = make_spec(peers=(peer("node3"), peer("node2", host_key=key("ssh-rsa", 7) + " root@node2")))
    assert (
        render_known_hosts(spec) == f"{HEADER}\nnode2 {key('ssh-rsa', 7)}\nnode3 {peer('node3').host_key}\n"
    )


def test_known_hosts_of_an_empty_mesh_hold_the_header_only_and_no_keys_file_is_wanted() -> None:
    spec = make_spec(peers=())
    assert render_known_hosts(spec) == HEADER + "\n"
    assert not [e for e in desired_entries(spec) if e.path.startswith(f"{K}/")]


def test_profile_exact_text() -> None:
    spec = make_spec(settings=Settings(unison_extra_prefs=("maxthreads = 4", "rsync = false")))
    node2, folder = peer("node2", "10.0.0.12", port=2222), spec.folders[0]
    assert render_profile(spec, node2, folder) == (
        "# Managed by replimesh (mesh_member): node1 pulls folder shared from node2.\n"
        "root = /srv/replimesh/shared\n"
        "root = ssh://replimesh-node1@10.0.0.12:2222//srv/replimesh/shared\n"
        # Pull only: the peer's root is never written.
        "noupdate = ssh://replimesh-node1@10.0.0.12:2222//srv/replimesh/shared\n"
        "nodeletion = ssh://replimesh-node1@10.0.0.12:2222//srv/replimesh/shared\n"
        "nocreation = ssh://replimesh-node1@10.0.0.12:2222//srv/replimesh/shared\n"
        "batch = true\nauto = true\nprefer = newer\ncopyonconflict = true\ntimes = true\nfastcheck = true\n"
        "log = false\nconfirmbigdel = true\nretry = 2\nperms = 0o1775\n"
        "mountpoint = .replimesh-folder\n"
        "ignore = Name .replimesh-folder\n"
        "ignore = Name .replimeshignore\n"
        "ignore = Name *.tmp\n"
        "ignore = Path cache/build\n"
        "sshargs = -F none -i /var/lib/replimesh/.ssh/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes "
        "-o UserKnownHostsFile=/etc/replimesh/known_hosts "
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ConnectTimeout=10 "
        "-o ServerAliveInterval=5 -o ServerAliveCountMax=3 "
        "-o ControlMaster=auto -o ControlPath=/var/lib/replimesh/.ssh/mux-%C -o ControlPersist=60 "
        "-o HostKeyAlias=node2\n"
        "maxthreads = 4\nrsync = false\n"
    )


def test_profile_follows_settings_and_layout() -> None:
    layout = Layout(key="/k/id", known_hosts="/k/known")
    spec = make_spec(
        layout=layout, settings=Settings(connect_timeout=3, server_alive_interval=9, marker=".m")
    )
    text = render_profile(spec, peer("node2"), Folder("f", "/data/f"))
    assert "-i /k/id " in text and "UserKnownHostsFile=/k/known " in text
    assert "ConnectTimeout=3 " in text and "ServerAliveInterval=9 " in text
    assert "mountpoint = .m\nignore = Name .m\nignore = Name .replimeshignore\nsshargs" in text


def test_one_shared_connection_per_peer_beside_the_key_unless_turned_off() -> None:
    spec = make_spec(layout=Layout(key="/home/m/.ssh/id"), settings=Settings(ssh_control_persist=60))
    options = " ".join(ssh_options(spec))
    assert "-o ControlMaster=auto -o ControlPath=/home/m/.ssh/mux-%C -o ControlPersist=60" in options
    assert "ControlPersist=60" in render_profile(spec, peer("node2"), Folder("f", "/data/f"))
    assert json.loads(render_config(spec))["ssh_options"] == ssh_options(spec)  # the watcher's notices
    off = make_spec(settings=Settings(ssh_control_persist=0))
    assert not any(option.startswith("Control") for option in ssh_options(off))


def test_preferred_ciphers_go_at_the_head_of_ssh_s_list_in_profiles_and_notices() -> None:
    ciphers = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")
    spec = make_spec(settings=Settings(ssh_ciphers=ciphers))
    option = "-o Ciphers=^aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"
    assert option in " ".join(ssh_options(spec))
    assert option in render_profile(spec, peer("node2"), Folder("f", "/data/f"))
    assert json.loads(render_config(spec))["ssh_options"] == ssh_options(spec)
    assert not any(o.startswith("Ciphers") for o in ssh_options(make_spec()))  # none set: ssh's own order


def test_profile_keeps_backups_outside_the_folder_only_when_asked() -> None:
    spec = make_spec(settings=Settings(backups=3), layout=Layout(backup_dir="/b"))
    text = render_profile(spec, peer("node2"), Folder("docs", "/data/docs"))
    backups = "backup = Name *\nbackuplocation = central\nbackupdir = /b/docs\nmaxbackups = 3\n"
    assert text.endswith(backups)
    assert "backup" not in render_profile(make_spec(), peer("node2"), Folder("docs", "/data/docs"))
    assert '"backups": 3' in render_config(spec) and '"backup_dir": "/b"' in render_config(spec)


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("fd00::1", "[fd00::1]"),
        ("::1", "[::1]"),
        ("node2.example.org", "node2.example.org"),
    ],
)
def test_ipv6_addresses_go_in_brackets_in_the_ssh_root(address: str, host: str) -> None:
    assert url_host(address) == host
    spec = make_spec()
    text = render_profile(spec, peer("node2", address, port=22), spec.folders[0])
    assert f"root = ssh://replimesh-node1@{host}:22//srv/replimesh/shared\n" in text
    with_address = make_spec(peers=(peer("node2", address),))
    assert f'from="{address}"' in render_authorized_keys(with_address, with_address.peers[0])


def test_desired_entries_modes_and_owners() -> None:
    spec = make_spec(folders=(Folder("a", "/srv/a"), Folder("b", "/data/b")), user="mesh")
    entries = {e.path: e for e in desired_entries(spec)}
    # The jail's own directories: its root and every directory above the Unison dir and the folders (not
    # the folders' mount points: those are bind mounts, never chowned). No versions in any jail.
    jail_dirs = ["", "/var", "/var/lib", "/var/lib/replimesh", U, "/srv", "/data"]
    peers = ("node2", "node3")
    assert set(entries) == {
        "/etc/replimesh/mesh.json",
        "/etc/replimesh/known_hosts",
        P,
        *(f"{K}/mesh-{p}" for p in peers),
        *(f"{J}/mesh-{p}{d}" for p in peers for d in jail_dirs),
        *(f"{J}/mesh-{p}{U}/{p}" for p in peers),
        *(f"{J}/mesh-{p}/notify" for p in peers),
        *(f"{J}/mesh-{p}{U}/{p}/{name}" for p in peers for name in guards(p, ["a", "b"])),
        f"{U}/node2",
        f"{U}/node3",
        *(f"{P}/{p}--{f}.prf" for p in peers for f in ("a", "b")),
    }
    assert not [path for path in entries if B in path]
    assert entries[P] == Entry(P, "dir", None, 0o755, "root", "root")
    node2 = f"{J}/mesh-node2"
    for d in jail_dirs:  # sshd refuses a chroot with a directory anyone but root may write
        assert entries[node2 + d] == Entry(node2 + d, "dir", None, 0o755, "root", "root"), d
    archive = f"{node2}{U}/node2"
    assert entries[archive] == Entry(archive, "dir", None, 0o1770, "root", "mesh")
    # The host's edge directory is a link to the one in the peer's jail: both ends share the archives.
    assert entries[f"{U}/node2"] == Entry(f"{U}/node2", "link", archive, 0o777, "root", "root")
    notify = f"{node2}/notify"
    assert entries[notify] == Entry(notify, "dir", None, 0o1770, "root", "mesh")
    # Every name Unison reads as a setting in the edge directory is a root-owned link: the profile's two
    # names to the root-owned profile, default and default.prf to /dev/null.
    for name in ("default", "default.prf"):
        assert entries[f"{archive}/{name}"] == Entry(
            f"{archive}/{name}", "link", "/dev/null", 0o777, "root", "root"
        )
    for folder in ("a", "b"):
        for name in (f"node2--{folder}", f"node2--{folder}.prf"):
            assert entries[f"{archive}/{name}"] == Entry(
                f"{archive}/{name}", "link", f"{P}/node2--{folder}.prf", 0o777, "root", "root"
            )
        profile = entries[f"{P}/node2--{folder}.prf"]
        assert profile.content == render_profile(spec, spec.peers[1], spec.folders[folder == "b"])
    assert f"{J}/mesh-node3{U}/node2" not in entries  # no jail holds another edge's archives
    for path, entry in entries.items():
        if entry.kind == "file":
            assert (entry.mode, entry.owner, entry.group) == (0o644, "root", "root"), path
            assert entry.content and entry.content.endswith("\n")
        if entry.kind == "link":
            assert (entry.mode, entry.owner, entry.group) == (0o777, "root", "root"), path
    assert entries[f"{K}/mesh-node3"].content == render_authorized_keys(spec, spec.peers[0])
    order = [e.path for e in desired_entries(spec)]
    assert order.index(P) < order.index(f"{P}/node2--a.prf")
    assert order.index(node2) < order.index(f"{node2}/var") < order.index(archive)
    assert order.index(archive) < order.index(f"{U}/node2") < order.index(f"{archive}/default")
    # A guard is written after the profile it points at.
    assert order.index(f"{P}/node2--a.prf") < order.index(f"{archive}/node2--a")


# --- keys -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"]
)
def test_known_key_types_are_accepted(kind: str) -> None:
    assert normalize_key(f"  {key(kind)} comment here \n", "k") == key(kind)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "AAAAC3NzaC1lZDI1NTE5AAAAI",
        "ssh-dss " + key("ssh-dss").split()[1],
        "ssh-ed25519 not*base64",
        "ssh-ed25519 " + key("ssh-rsa").split()[1],  # the blob names another type
        "ssh-ed25519",
    ],
)
def test_bad_keys_are_refused(value: str) -> None:
    with pytest.raises(MemberError, match="public_key"):
        normalize_key(value, "peers[0] (node2): public_key")


# --- validation -----------------------------------------------------------------------------------------


def test_a_good_spec_validates() -> None:
    validate(make_spec())
    validate(make_spec(peers=()))
    for brake in ("0", "100", "123456789", "0%", "5%", "50%", "100%"):
        validate(make_spec(settings=Settings(max_deletions=brake)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node": "Node1"}, "node 'Node1' is not a valid name"),
        ({"node": "-x"}, "node"),
        ({"user": "Root"}, "user 'Root' is not a valid user name"),
        ({"user": "a" * 33}, "user"),
        ({"user": "a" * 22}, "21 characters at most"),
        (
            {"layout": Layout(backup_dir="/var/lib/replimesh")},
            "unison_dir /var/lib/replimesh/unison must not be or lie inside backup_dir",
        ),
        (
            {"layout": Layout(jails_dir="/var/lib/replimesh/jail/x")},
            "jails_dir .* must not be or lie inside jail_template",
        ),
        ({"folders": ()}, "at least one folder"),
        ({"folders": (Folder("Bad", "/srv/x"),)}, r"folders\[0\]: name 'Bad'"),
        ({"folders": (Folder("x", "srv/x"),)}, "absolute path"),
        ({"folders": (Folder("x", "/srv/my x"),)}, "without spaces"),
        ({"folders": (Folder("x", "/srv/../etc"),)}, "normalized"),
        ({"folders": (Folder("x", "/"),)}, "must not be /"),
        ({"folders": (Folder("x", "/var/lib/replimesh"),)}, "unison_dir"),
        ({"folders": (Folder("x", U + "/x"),)}, "unison_dir"),
        ({"folders": (Folder("x", "/srv/x", ("a\nroot = /etc",)),)}, "one line"),
        ({"folders": (Folder("x", "/srv/x"), Folder("x", "/srv/y"))}, "repeated: x"),
        ({"peers": (peer("node1"),)}, "own peer"),
        ({"peers": (peer("Node2"),)}, "not a valid name"),
        ({"peers": (peer("node2"), peer("node2", "10.9.9.9"))}, "repeated: node2"),
        ({"peers": (peer("node2", '10.0.0.2" ,command="sh'),)}, "without quotes, spaces"),
        ({"peers": (peer("node2", "10.0.0.2,10.0.0.3"),)}, "commas"),
        ({"peers": (peer("node2", "a b"),)}, "address"),
        ({"peers": (peer("node2", port=0),)}, "port must be 1-65535"),
        ({"peers": (peer("node2", port=70000),)}, "port"),
        ({"peers": (peer("node2", port=True),)}, "port"),
        ({"peers": (peer("node2", active="yes"),)}, "active must be true or false"),
        ({"peers": (peer("node2", public_key="ssh-dss AAAA"),)}, r"peers\[0\] \(node2\): public_key"),
        ({"peers": (peer("node2", host_key="AAAA"),)}, "host_key"),
        ({"settings": Settings(concurrency=0)}, "concurrency must be a positive"),
        ({"settings": Settings(timeout=-1)}, "timeout"),
        ({"settings": Settings(server_alive_interval=False)}, "server_alive_interval"),
        ({"settings": Settings(ssh_control_persist=-1)}, "ssh_control_persist must be a whole number"),
        ({"settings": Settings(ssh_control_persist=86401)}, "ssh_control_persist"),
        ({"settings": Settings(ssh_control_persist=True)}, "ssh_control_persist"),
        ({"settings": Settings(ssh_ciphers=("aes128-gcm@openssh.com x",))}, "not an ssh cipher name"),
        ({"settings": Settings(ssh_ciphers=("-oProxyCommand=sh",))}, "ssh_ciphers"),
        ({"settings": Settings(ssh_ciphers=("aes128-ctr", "aes128-ctr"))}, "named twice"),
        ({"settings": Settings(marker="a/b")}, "marker"),
        ({"settings": Settings(backups=-1)}, "backups must be a whole number 0-1000"),
        ({"settings": Settings(backups=True)}, "backups"),
        ({"settings": Settings(max_deletions="101%")}, r"max_deletions must be a count .* \(got '101%'\)"),
        ({"settings": Settings(max_deletions="-1")}, "max_deletions"),
        ({"settings": Settings(max_deletions="50 %")}, "max_deletions"),
        ({"settings": Settings(max_deletions="1234567890")}, "max_deletions"),
        ({"settings": Settings(max_deletions="")}, "max_deletions"),
        ({"settings": Settings(max_deletions=50)}, r"max_deletions .* \(got 50\)"),
        ({"layout": Layout(profiles_dir="/etc")}, "profiles_dir /etc is a system directory"),
        ({"layout": Layout(profiles_dir="etc/profiles")}, "profiles_dir must be"),
        (
            {"layout": Layout(profiles_dir="/var/lib/replimesh/unison/profiles")},
            "profiles_dir .* must not be or lie inside unison_dir",
        ),
        (
            {"layout": Layout(profiles_dir="/var/lib/replimesh/jails/p")},
            "must not be or lie inside jails_dir",
        ),
        ({"layout": Layout(backup_dir="/srv/replimesh")}, "must not be /, nor hold or lie inside"),
        ({"layout": Layout(backup_dir="/var/lib")}, "backup_dir /var/lib is a system directory"),
        ({"settings": Settings(marker="")}, "marker"),
        ({"settings": Settings(unison_extra_prefs=("maxthreads=4",))}, "name = value"),
        ({"settings": Settings(unison_extra_prefs=("a = b\nroot = /",))}, "one line"),
        ({"layout": Layout(unison_dir="/var")}, "system directory"),
        ({"layout": Layout(state_dir="/")}, "state_dir / is a system directory"),
        ({"layout": Layout(config_file="etc/mesh.json")}, "config_file must be"),
        ({"layout": Layout(unison_binary="/usr/bin/uni son")}, "unison_binary"),
        ({"layout": Layout(known_hosts="/etc/replimesh/mesh.json")}, "two different files"),
        ({"layout": Layout(jails_dir="/var/lib")}, "jails_dir /var/lib is a system directory"),
        ({"layout": Layout(authorized_keys_dir="/etc")}, "authorized_keys_dir /etc is a system directory"),
        ({"layout": Layout(jail_template="var/jail")}, "jail_template must be"),
        ({"folders": (Folder("x", J + "/x"),)}, "jails_dir"),
        ({"folders": (Folder("x", "/var/lib/replimesh"),)}, "jails_dir"),
        ({"layout": Layout(jails_dir="/srv/replimesh/shared/jails")}, "nor hold or lie inside"),
    ],
)
def test_invalid_specs_are_refused_with_a_message(change: dict[str, object], message: str) -> None:
    with pytest.raises(MemberError, match=message):
        validate(dataclasses.replace(make_spec(), **change))


def with_prefs(*prefs: str) -> MemberSpec:
    return dataclasses.replace(make_spec(), settings=Settings(unison_extra_prefs=prefs))


@pytest.mark.parametrize(
    "pref",
    [
        "sshcmd = /tmp/evil",
        "servercmd = /bin/sh",
        "root = /etc",
        "perms = 0o7777",
        "backupdir = /tmp",
        "maxbackups = 0",
        "prefer = /srv/replimesh/shared",
        "nodeletion = /srv/replimesh/shared",
        "ignore = Name *",
        "include = /tmp/more.prf",
        "links = true",
        "fastcheck = false",
        "merge = Name * -> sh -c CURRENT1",
        "SshArgs = -o ProxyCommand=sh",
        "BACKUP = Name *",
        "fastercheckUNSAFE = true",
        "somethingUnsafe = true",
    ],
)
def test_extra_prefs_that_replimesh_decides_are_refused(pref: str) -> None:
    name = pref.split(" = ")[0]
    with pytest.raises(MemberError) as info:
        validate(with_prefs("maxthreads = 4", pref))
    assert str(info.value) == (
        f"unison_extra_prefs: '{name} = ...' sets {name}, which replimesh decides itself (it guards the "
        "node's own safety); remove it"
    )


def test_every_reserved_pref_is_refused_and_harmless_ones_are_kept() -> None:
    for name in RESERVED_PREFS:
        with pytest.raises(MemberError, match=f"sets {name},"):
            validate(with_prefs(f"{name} = x"))
    kept = ("retry = 3", "rsync = false", "maxthreads = 4", "times = true", "sortbysize = true")
    validate(with_prefs(*kept))
    assert render_profile(with_prefs(*kept), peer("node2"), make_spec().folders[0]).endswith(
        "\n".join(kept) + "\n"
    )


def test_spec_from_params_applies_defaults_and_validates() -> None:
    params = {
        "node": "node1",
        "user": None,
        "folders": [{"name": "shared", "path": "/srv/shared", "ignore": None}],
        "peers": [
            {"name": "node2", "address": "10.0.0.2", "public_key": key(), "host_key": key(), "port": None}
        ],
        "unison_dir": "/data/unison",
        "timeout": None,
    }
    spec = spec_from_params(params)
    assert spec.user == "replimesh" and spec.settings == Settings()
    assert spec.settings.max_deletions == "50%" and spec.layout.profiles_dir == "/etc/replimesh/profiles"
    given_brake = spec_from_params({**params, "max_deletions": "25", "profiles_dir": "/etc/rm/p"})
    assert given_brake.settings.max_deletions == "25" and given_brake.layout.profiles_dir == "/etc/rm/p"
    assert spec.peers == (PeerSpec("node2", "10.0.0.2", key(), key(), 22, False, True),)
    assert spec.folders == (Folder("shared", "/srv/shared", ()),)
    assert spec.layout == Layout(unison_dir="/data/unison")
    with pytest.raises(MemberError, match="own peer"):
        spec_from_params({**params, "node": "node2"})
    with pytest.raises(MemberError, match="lists of mappings"):
        spec_from_params({**params, "peers": ["node2"]})


# --- planning -------------------------------------------------------------------------------------------


def test_a_fresh_node_gets_everything() -> None:
    spec = make_spec()
    result = plan(spec, Existing())
    assert result.changed
    jails = [f"{J}/replimesh-{p}" for p in ("node2", "node3")]
    dirs = [
        "",
        "/var",
        "/var/lib",
        "/var/lib/replimesh",
        U,
        "/srv",
        "/srv/replimesh",
        f"{U}/node2",
        "/notify",
    ]
    mkdirs = [e.path for e in result.mkdirs]
    assert mkdirs[0] == P
    assert mkdirs[1 : 1 + len(dirs)] == [jails[0] + d for d in dirs]
    assert mkdirs[1 + len(dirs) :] == [jails[1] + d.replace("node2", "node3") for d in dirs]
    assert [(e.path, e.kind, e.content if e.kind == "link" else None) for e in result.writes] == [
        ("/etc/replimesh/mesh.json", "file", None),
        ("/etc/replimesh/known_hosts", "file", None),
        *(
            entry
            for jail, p in zip(jails, ("node2", "node3"), strict=True)
            for entry in (
                (f"{K}/replimesh-{p}", "file", None),
                (f"{U}/{p}", "link", f"{jail}{U}/{p}"),
                (f"{jail}{U}/{p}/default", "link", "/dev/null"),
                (f"{jail}{U}/{p}/default.prf", "link", "/dev/null"),
                (f"{P}/{p}--shared.prf", "file", None),
                (f"{jail}{U}/{p}/{p}--shared", "link", f"{P}/{p}--shared.prf"),
                (f"{jail}{U}/{p}/{p}--shared.prf", "link", f"{P}/{p}--shared.prf"),
            )
        ),
    ]
    assert not result.fixes and not result.removes
    assert result.peers_added == ("node2", "node3") and result.peers_removed == result.peers_kept == ()
    assert all(d["before"] == "" for d in result.diffs())


def test_a_settled_node_needs_nothing() -> None:
    spec = make_spec()
    result = plan(spec, settled(spec))
    assert not result.changed and result.diffs() == []
    assert result.peers_kept == ("node2", "node3") and result.peers_added == result.peers_removed == ()


def test_changed_content_is_rewritten_with_a_diff() -> None:
    spec = make_spec()
    existing = settled(spec)
    old = dataclasses.replace(existing.stats["/etc/replimesh/mesh.json"], content="{}\n")
    result = plan(
        spec, dataclasses.replace(existing, stats={**existing.stats, "/etc/replimesh/mesh.json": old})
    )
    assert [e.path for e in result.writes] == ["/etc/replimesh/mesh.json"]
    assert result.diffs() == [
        {
            "before_header": "/etc/replimesh/mesh.json",
            "after_header": "/etc/replimesh/mesh.json",
            "before": "{}\n",
            "after": render_config(spec),
        }
    ]


@pytest.mark.parametrize(
    ("path", "change"),
    [
        (f"{K}/replimesh-node2", {"mode": 0o664}),
        ("/etc/replimesh/known_hosts", {"owner": "replimesh"}),
        (f"{P}/node2--shared.prf", {"group": "replimesh"}),
        (P, {"mode": 0o775}),
        (f"{J}/replimesh-node2{U}/node2", {"mode": 0o770}),
        (f"{J}/replimesh-node3{U}/node3", {"group": "root"}),
        (f"{J}/replimesh-node3", {"owner": "replimesh"}),
        (f"{J}/replimesh-node2/srv", {"mode": 0o775}),
        (f"{J}/replimesh-node2/notify", {"mode": 0o777}),
        (f"{J}/replimesh-node3/notify", {"group": "root"}),
    ],
)
def test_wrong_mode_or_owner_is_fixed_without_rewriting(path: str, change: dict[str, object]) -> None:
    spec = make_spec()
    existing = settled(spec)
    stats = {**existing.stats, path: dataclasses.replace(existing.stats[path], **change)}
    result = plan(spec, dataclasses.replace(existing, stats=stats))
    assert [e.path for e in result.fixes] == [path] and not result.writes and result.changed


def test_a_symlink_where_a_file_belongs_is_replaced() -> None:
    spec = make_spec()
    existing = settled(spec)
    path = f"{P}/node2--shared.prf"
    stats = {**existing.stats, path: Stat("link", 0o777, "replimesh", "replimesh")}
    result = plan(spec, dataclasses.replace(existing, stats=stats))
    assert [e.path for e in result.writes] == [path] and result.diffs()[0]["before"] == ""


def test_a_guard_planted_or_pointed_elsewhere_is_replaced_by_roots_link() -> None:
    spec = make_spec()
    existing = settled(spec)
    archive = f"{J}/replimesh-node2{U}/node2"
    stats = {
        **existing.stats,
        # The earlier layout's profile, a regular file in the edge directory.
        f"{archive}/node2--shared.prf": Stat("file", 0o644, "root", "root", "root = /\n"),
        # A link that points at a profile of the peer's choosing.
        f"{archive}/node2--shared": Stat("link", 0o777, "root", "root", f"{archive}/evil.prf"),
    }
    stats.pop(f"{archive}/default")  # a guard that is missing
    result = plan(spec, dataclasses.replace(existing, stats=stats))
    assert [(r.path, r.kind) for r in result.removes] == [
        (f"{archive}/node2--shared", "file"),
        (f"{archive}/node2--shared.prf", "file"),
    ]
    assert [(e.path, e.kind, e.content) for e in result.writes] == [
        (f"{archive}/default", "link", "/dev/null"),
        (f"{archive}/node2--shared", "link", f"{P}/node2--shared.prf"),
        (f"{archive}/node2--shared.prf", "link", f"{P}/node2--shared.prf"),
    ]
    assert not result.fixes and not result.mkdirs


def test_a_non_directory_where_an_edge_directory_belongs_is_removed_first() -> None:
    spec = make_spec()
    existing = settled(spec)
    archive = f"{J}/replimesh-node2{U}/node2"
    stats = {**existing.stats, archive: Stat("link", 0o777, "replimesh", "replimesh", "/etc")}
    stats.pop(f"{U}/node2")
    result = plan(spec, dataclasses.replace(existing, stats=stats, unison_dirs=("node3",)))
    assert [(r.path, r.kind) for r in result.removes] == [(archive, "file")]
    assert [e.path for e in result.mkdirs] == [archive]
    assert [(e.path, e.content) for e in result.writes] == [(f"{U}/node2", archive)]
    assert result.peers_added == ("node2",)


def test_the_shared_jail_layouts_edge_directory_becomes_a_link_into_the_peers_jail() -> None:
    spec = make_spec()
    existing = settled(spec)
    stats = {
        **existing.stats,
        f"{U}/node2": Stat("dir", 0o1770, "root", "replimesh"),
        f"{U}/node3": Stat("link", 0o777, "replimesh", "replimesh", "/etc"),
    }
    result = plan(spec, dataclasses.replace(existing, stats=stats))
    # The old directory goes with its archives (the next sync builds a fresh one); a link elsewhere goes.
    assert [(r.path, r.kind) for r in result.removes] == [(f"{U}/node2", "dir"), (f"{U}/node3", "file")]
    assert [(e.path, e.kind, e.content) for e in result.writes] == [
        (f"{U}/{p}", "link", f"{J}/replimesh-{p}{U}/{p}") for p in ("node2", "node3")
    ]
    assert result.peers_kept == ("node2", "node3") and not result.mkdirs


def test_keys_files_of_gone_logins_and_the_shared_one_are_removed_others_stay() -> None:
    spec = make_spec(peers=(peer("node2"),))
    files = ("replimesh", "replimesh-node2", "replimesh-node9", "root", "alice", "other-node9", "replimeshx")
    result = plan(spec, dataclasses.replace(settled(spec), key_files=files))
    assert [r.path for r in result.removes] == [f"{K}/replimesh", f"{K}/replimesh-node9"]
    assert all(r.kind == "file" for r in result.removes)


def test_a_directory_where_a_file_belongs_is_an_error() -> None:
    spec = make_spec()
    existing = settled(spec)
    stats = {**existing.stats, "/etc/replimesh/known_hosts": Stat("dir", 0o755, "root", "root")}
    with pytest.raises(MemberError, match="known_hosts is a directory"):
        plan(spec, dataclasses.replace(existing, stats=stats))


def test_a_removed_peer_loses_its_directory_status_and_lock() -> None:
    old = make_spec(peers=(peer("node2"), peer("node3"), peer("node4")))
    new = make_spec(peers=(peer("node2"), peer("node5")))
    result = plan(new, settled(old))
    assert [(r.path, r.kind) for r in result.removes] == [
        (f"{U}/node3", "dir"),
        (f"{U}/node4", "dir"),
        # Their profiles (the guards go with their jails' edge directories).
        (f"{P}/node3--shared.prf", "file"),
        (f"{P}/node4--shared.prf", "file"),
        (f"{K}/replimesh-node3", "file"),
        (f"{K}/replimesh-node4", "file"),
        (f"{S}/status/node3.json", "file"),
        (f"{S}/status/node4.json", "file"),
        (f"{S}/locks/node3.lock", "file"),
        (f"{S}/locks/node4.lock", "file"),
    ]
    assert (result.peers_added, result.peers_removed, result.peers_kept) == (
        ("node5",),
        ("node3", "node4"),
        ("node2",),
    )
    # The new peer's login gets its keys file and jail; the kept one is left as it is.
    assert f"{K}/replimesh-node5" in [e.path for e in result.writes]
    assert f"{J}/replimesh-node5" in [e.path for e in result.mkdirs]
    assert not [e for e in (*result.writes, *result.mkdirs, *result.fixes) if "node2" in e.path]


def test_only_directories_named_like_nodes_are_removed() -> None:
    spec = make_spec(peers=())
    existing = Existing(unison_dirs=("lost+found", ".cache", "Node9", "node9", "_x"))
    result = plan(spec, existing)
    assert [r.path for r in result.removes] == [f"{U}/node9"]
    assert result.peers_removed == ("node9",)


def test_orphaned_status_and_lock_files_go_other_files_stay() -> None:
    spec = make_spec(peers=(peer("node2"),))
    existing = dataclasses.replace(
        settled(spec),
        status=("node2.json", "node7.json", "README", "node7.json.tmp", ".json", "Node8.json"),
        locks=("node2.lock", "node7.lock", "node7.json", "other"),
    )
    assert [r.path for r in plan(spec, existing).removes] == [
        f"{S}/status/node7.json",
        f"{S}/locks/node7.lock",
    ]


def test_profiles_and_guards_of_dropped_folders_and_peers_are_removed_archives_stay() -> None:
    spec = make_spec(peers=(peer("node2"),))
    profiles = (
        "node2--shared.prf",
        "node2--old.prf",
        "node3--old.prf",  # node3 is no peer any more
        "node2--old",  # not a name mesh_member writes in profiles_dir
        "Node2--old.prf",
        "x.prf",
        "README",
    )
    files = (
        *guards("node2", ["shared"]),
        "node2--old",
        "node2--old.prf",
        "ar" + "1" * 32,
        "fp" + "1" * 32,
        "node3--old.prf",  # another edge's name: not this directory's to remove
        "x.prf",
    )
    existing = dataclasses.replace(settled(spec), peer_files={"node2": files}, profile_files=profiles)
    assert [(r.path, r.kind) for r in plan(spec, existing).removes] == [
        (f"{P}/node2--old.prf", "file"),
        (f"{P}/node3--old.prf", "file"),
        (f"{U}/node2/node2--old", "file"),
        (f"{U}/node2/node2--old.prf", "file"),
    ]


def test_a_node_directory_for_the_node_itself_is_stale() -> None:
    result = plan(make_spec(peers=(peer("node2"),)), Existing(unison_dirs=("node1", "node2")))
    assert [r.path for r in result.removes] == [f"{U}/node1"] and result.peers_kept == ("node2",)


NAMES = st.sets(st.sampled_from(["node2", "node3", "node4", "node5", "n-6", "n_7"]), max_size=6)
FOLDERS = st.sets(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)


@settings(max_examples=80, deadline=None)
@given(before=NAMES, after=NAMES, old_folders=FOLDERS, new_folders=FOLDERS, active=st.booleans())
def test_any_change_of_peers_and_folders_converges(
    before: set[str], after: set[str], old_folders: set[str], new_folders: set[str], active: bool
) -> None:
    def spec_of(names: set[str], folders: set[str]) -> MemberSpec:
        return make_spec(
            peers=tuple(peer(n, active=active) for n in sorted(names)),
            folders=tuple(Folder(f, f"/srv/{f}") for f in sorted(folders)),
        )

    old, new = spec_of(before, old_folders), spec_of(after, new_folders)
    result = plan(new, settled(old))
    assert set(result.peers_removed) == before - after
    assert set(result.peers_added) == after - before
    assert set(result.peers_kept) == before & after
    removed = {r.path for r in result.removes}
    assert {f"{U}/{n}" for n in before - after} <= removed
    assert {f"{K}/replimesh-{n}" for n in before - after} <= removed
    dropped = {(n, f) for n in before & after for f in old_folders - new_folders}
    assert {f"{U}/{n}/{n}--{f}{ext}" for n, f in dropped for ext in ("", ".prf")} <= removed
    assert {f"{P}/{n}--{f}.prf" for n, f in dropped} <= removed
    assert {f"{P}/{n}--{f}.prf" for n in before - after for f in old_folders} <= removed
    for path in removed:  # nothing else under unison_dir: the kept edges' archives stay
        if path.startswith(f"{P}/"):
            name, _, folder = path.removeprefix(f"{P}/").removesuffix(".prf").partition("--")
            assert name in before - after or (name, folder) in dropped
            continue
        if path.startswith(f"{K}/"):
            assert path.removeprefix(f"{K}/replimesh-") in before - after
            continue
        if not path.startswith(f"{U}/"):
            assert path.startswith(f"{S}/") and path.split("/")[-1].split(".")[0] in before - after
            continue
        name, _, rest = path.removeprefix(f"{U}/").partition("/")
        if rest:
            assert name in after and (name, rest.removeprefix(f"{name}--").removesuffix(".prf")) in dropped
        else:
            assert name in before - after
    assert not plan(new, settled(new)).changed


def test_a_host_name_goes_into_from_as_the_addresses_it_resolves_to_on_the_node() -> None:
    # sshd matches from= against the client's IP address (UseDNS no): a host name there never matches.
    spec = make_spec(peers=(peer("node2", "node2.lan"), peer("node3", "10.0.0.13")))
    answers = {"node2.lan": ("10.1.0.2", "fd00::2")}

    resolved = with_sources(spec, lambda address: answers.get(address) or resolve_address(address))

    assert 'from="10.1.0.2,fd00::2"' in render_authorized_keys(resolved, resolved.peers[0])
    assert 'from="10.0.0.13"' in render_authorized_keys(resolved, resolved.peers[1])


def test_resolve_address_keeps_an_ip_address_as_written_and_asks_the_resolver_for_a_name() -> None:
    asked = []

    def getaddrinfo(host: str, *args: object) -> list[tuple]:
        asked.append(host)
        return [
            (2, 1, 6, "", ("10.1.0.2", 0)),
            (2, 1, 6, "", ("10.1.0.2", 0)),
            (10, 1, 6, "", ("fd00::2", 0, 0, 0)),
        ]

    assert resolve_address("fd00:0::2", getaddrinfo) == ("fd00:0::2",)
    assert resolve_address("node2.lan", getaddrinfo) == ("10.1.0.2", "fd00::2")
    assert asked == ["node2.lan"]


def test_a_host_name_that_does_not_resolve_on_the_node_is_a_clear_error() -> None:
    spec = make_spec(peers=(peer("node2", "node2.lan"),))

    def fail(address: str) -> tuple[str, ...]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(MemberError, match=r"peer node2: host name node2.lan does not resolve on node1"):
        with_sources(spec, fail)
