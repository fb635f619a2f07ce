"""`meshctl bench`: replimesh against Debian's Syncthing on the same 8 lab hosts, in one run.

The pure parts (statistics, the results file's keys and targets, RESULTS.md) are unit-tested; the
lab-driving parts (run, probes, syncthing, mesh) need root and Docker and run only from `meshctl bench`.
"""
