"""replimesh: a peer-to-peer file replication mesh over SSH and Unison, provisioned with Ansible."""

__version__ = "0.1.0"
