"""The failover agent the hosts of an HA mesh run (agent.py, with ec2.py beside it on AWS).

These files are shipped to the hosts as they are (standard library only, Python >= 3.9) and never
import wgmesh; wgmesh imports them only in tests and to read their text (wgmesh/ha.py).
"""
