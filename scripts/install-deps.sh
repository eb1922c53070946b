#!/usr/bin/env bash
# Installs the Debian packages corral needs on a host, only those that are missing.
# Guest-only packages (guest kernel, busybox) are NOT installed: `corral image build-tiny`
# downloads them with `apt-get download` and unpacks them into its build dir.
set -euo pipefail

PKGS=(
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  dnsmasq-base nftables iproute2 iptables
  e2fsprogs cpio xz-utils zstd
  python3-venv python3-dev gcc
  ovmf procps psmisc tini libxml2-utils
  swtpm swtpm-tools  # --tpm: libvirt runs swtpm (TPM 2.0) per VM, swtpm_setup makes its state
  busybox-static  # udhcpc: the DHCP client of the network integration tests
  openvswitch-switch  # networks with --backend ovs (the agent starts its daemons itself)
  iperf3  # bench/network.py: TCP throughput over bridges
  openssh-client  # `corral vm ssh` runs the system ssh
  # `corral image/vm customize`: virt-customize. --no-install-recommends keeps the host kernel
  # package out; the appliance boots the tiny guest's kernel (corral.agent.customize).
  libguestfs-tools
  curl  # bench/image_import.py: the raw tool import is compared with
  # Ceph RBD pools: the rbd/ceph CLIs (agent), QEMU's rbd block driver, and the one-machine
  # Ceph cluster (mon, mgr, OSDs) the storage tests start (tests/integration/ceph_cluster.py)
  ceph-common qemu-block-extra ceph-mon ceph-mgr ceph-osd
  # LDAP login tests: a real OpenLDAP slapd (tests/unit/slapd_server.py starts its own on
  # loopback; the package's system instance is stopped below) and ldapadd/ldapmodify
  slapd ldap-utils
  # The engine on PostgreSQL: tests/unit/pg_server.py starts a private server from these
  # programs (the package's own cluster is stopped below)
  postgresql
  # Power fencing (HA, `corral host fence`, `corral host power`): the ClusterLabs fence agents
  # (fence_ipmilan, fence_redfish, fence_virsh...; installs whole, about 94 MB); the fencing
  # unit tests run its fence_dummy
  fence-agents
  # HA membership and quorum (votequorum over knet): `corral lab` runs it in its hosts
  corosync
  # The web UI: npm installs its JavaScript/CSS (package-lock.json, `make node_modules`) and
  # the browser tests drive Debian's chromium headless through Playwright
  nodejs chromium
)
# npm comes with nodejs from some repositories (NodeSource's nodejs provides and conflicts
# with Debian's npm package): ask for Debian's npm only when no npm is there.
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "corral: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" slapd "* ]]; then
    # corral never uses the system's slapd (its postinst starts one where an init system
    # lets it, listening on port 389): stop it and keep it from starting at boot.
    if [ -d /run/systemd/system ]; then  # booted with systemd
      systemctl disable --now slapd >/dev/null 2>&1 || true
    else
      invoke-rc.d slapd stop >/dev/null 2>&1 || true
      update-rc.d slapd disable >/dev/null 2>&1 || true
    fi
  fi
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    # Nor the system's PostgreSQL: the postinst makes a cluster "main" and starts it where an
    # init system lets it (port 5432). Stop every cluster and keep them from starting at boot.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now postgresql >/dev/null 2>&1 || true
    else
      invoke-rc.d postgresql stop >/dev/null 2>&1 || true
      update-rc.d postgresql disable >/dev/null 2>&1 || true
    fi
    pg_lsclusters --no-header 2>/dev/null | while read -r ver name _rest; do
      pg_ctlcluster --mode fast "$ver" "$name" stop >/dev/null 2>&1 || true
    done || true
  fi
else
  echo "corral: system packages present"
fi
