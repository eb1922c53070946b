"""The tests' Ceph cluster: corral.lab.ceph (also what `corral lab up --storage rbd` starts)."""

from corral.lab.ceph import OSD_SIZE, OSDS, START_TIMEOUT_S, CephCluster

__all__ = ["OSDS", "OSD_SIZE", "START_TIMEOUT_S", "CephCluster"]
