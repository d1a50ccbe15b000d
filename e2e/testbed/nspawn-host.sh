#!/bin/bash
# Boots systemd (and so sshd) for host I inside its network namespace with systemd-nspawn.
# Recipe: ../shared/testbed/nspawn-up.sh. The root is an overlay of the shared base (lower,
# read-only) and WORK/up (this host's changes), in a private mount namespace that ends with
# the container. The container gets its own cgroup subtree (name=systemd and unified) so
# hosts' units do not collide. nspawn mounts the v1 controllers read-only inside; an agent
# host gets them writable (AGENT=1) once booted, as a real host has them: the harness
# remounts them (see e2e/testbed.rs), since they must be remounted from the container's
# own mount namespace. A `systemctl reboot` inside restarts the container (exit code 133).
# usage: nspawn-host.sh I NETNS BASE WORK      (runs in the foreground until the host stops)
set -uo pipefail
i=$1; netns=$2; base=$3; work=$4
mkdir -p "$work/up/etc" "$work/wk" "$work/merged"
[ -f "$work/up/etc/hostname" ] || echo "h$i" > "$work/up/etc/hostname"
exec unshare --mount --propagation private sh -c '
  i=$1; netns=$2; base=$3; work=$4
  for h in systemd unified; do
    mkdir -p /sys/fs/cgroup/$h/dcos-e2e-h$i && echo $$ > /sys/fs/cgroup/$h/dcos-e2e-h$i/cgroup.procs || exit 1
  done
  mount -t overlay ov -o lowerdir=$base,upperdir=$work/up,workdir=$work/wk $work/merged || exit 1
  mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn || exit 1
  while :; do
    systemd-nspawn --quiet --keep-unit --register=no --boot --directory=$work/merged --machine=h$i \
      --network-namespace-path=/run/netns/$netns --resolv-conf=off --timezone=off --link-journal=no \
      --capability=CAP_NET_ADMIN
    rc=$?; echo "nspawn exited rc=$rc"; [ $rc -eq 133 ] || exit $rc
  done' sh "$i" "$netns" "$base" "$work"
