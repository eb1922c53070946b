"""The agent: owns one host (libvirt, disks, networks) and reports what actually runs."""
