"""replimesh: a peer-to-peer file replication mesh over SSH and Unison, provisioned with Ansible."""

from replimesh.collection import ensure_importable

__version__ = "0.1.0"

# The core meshctl shares with the roles and modules is the collection's (ansible_collections.replimesh.mesh.
# plugins.module_utils): this checkout's collections/, or the collection installed where Ansible looks.
ensure_importable()
