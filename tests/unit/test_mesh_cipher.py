"""mesh_cipher: the cipher a node prefers, from its own /proc/cpuinfo."""

from __future__ import annotations

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_cipher import (
    check,
    hardware_aes,
    preferred,
    ssh_option,
)

X86_AES = (
    "processor\t: 0\nflags\t\t: fpu sse2 pclmulqdq aes avx2\n\nprocessor\t: 1\nflags\t\t: fpu aes avx2\n"
)
X86_PLAIN = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
ARM64_AES = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
# One CPU of two without AES (a mixed big.LITTLE part): a connection may run on either.
MIXED = "processor\t: 0\nFeatures\t: fp asimd aes\n\nprocessor\t: 1\nFeatures\t: fp asimd\n"


def test_aes_instructions_are_read_from_x86_flags_and_arm64_features() -> None:
    assert hardware_aes(X86_AES) and hardware_aes(ARM64_AES)
    assert not hardware_aes(X86_PLAIN)
    assert not hardware_aes(MIXED)
    assert not hardware_aes("")  # no /proc/cpuinfo: nothing known, the software-friendly order
    assert not hardware_aes("flags\t: fpu vaes_x\n")  # a flag is a whole word


def test_aes_gcm_first_with_aes_instructions_chacha20_first_without() -> None:
    assert preferred(True)[0] == "aes128-gcm@openssh.com"
    assert preferred(False)[0] == "chacha20-poly1305@openssh.com"
    assert sorted(preferred(True)) == sorted(preferred(False))  # the same three, in another order


def test_the_preference_heads_ssh_s_default_list_and_bad_names_are_refused() -> None:
    assert ssh_option(("aes128-gcm@openssh.com",)) == ["-o", "Ciphers=^aes128-gcm@openssh.com"]
    assert ssh_option(()) == []
    assert check(preferred(True)) is None
    assert "not an ssh cipher name" in (check(["aes128-gcm@openssh.com,3des-cbc"]) or "")
    assert "not an ssh cipher name" in (check(["^aes128-ctr"]) or "")
    assert "named twice" in (check(["aes128-ctr", "aes128-ctr"]) or "")
