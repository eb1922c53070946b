"""cloud-init NoCloud seeds: rendering of meta-data, user-data, network-config, and the ISO."""

from corral.cloudinit.seed import LABEL, SeedFiles, build_iso, default_hostname, instance_id, read_iso, render

__all__ = ["LABEL", "SeedFiles", "build_iso", "default_hostname", "instance_id", "read_iso", "render"]
