"""replimesh's tests.

They import the collection's core as Ansible does, through its collection loader, installed here before
anything imports it: `ansible_collections.replimesh.mesh` is this checkout's collections/ (whose plugins/
is mesh_plugins/), and the inventory plugin and filters load by their FQCN.
"""

from pathlib import Path

from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader([str(Path(__file__).resolve().parents[1] / "collections")])
