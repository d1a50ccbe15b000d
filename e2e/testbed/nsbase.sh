#!/bin/bash
# The Debian 12 root that the installer's e2e hosts boot with systemd-nspawn: systemd, sshd
# (root logs in with the harness's key only), no timers reaching the internet. Built once
# per machine into DIR (46-62 s with mmdebstrap from deb.debian.org), then reused.
# Recipe: ../shared/testbed/build-rootfs.sh and prep-guest-root.sh.
# usage: nsbase.sh DIR AUTHORIZED_KEY_FILE
set -euo pipefail
D=$1; KEY=$2
[ -f "$D/.dcos-rs-nsbase-1" ] && exit 0
command -v mmdebstrap >/dev/null || { echo "nsbase.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
rm -rf "$D".tmp.*
T=$D.tmp.$$
mmdebstrap --quiet --variant=apt \
  --include=systemd,systemd-sysv,dbus,openssh-server,iproute2,procps,ca-certificates \
  bookworm "$T" http://deb.debian.org/debian
mkdir -p "$T/root/.ssh" && chmod 700 "$T/root/.ssh"
cp "$KEY" "$T/root/.ssh/authorized_keys"
rm -f "$T/usr/sbin/policy-rc.d"
: > "$T/etc/resolv.conf"
for t in apt-daily-upgrade.timer apt-daily.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
  rm -f "$T/etc/systemd/system/timers.target.wants/$t"; ln -sf /dev/null "$T/etc/systemd/system/$t"
done
# One ed25519 host key per host, made at its first boot (the base ships none).
rm -f "$T"/etc/ssh/ssh_host_*
printf 'UseDNS no\nHostKey /etc/ssh/ssh_host_ed25519_key\n' > "$T/etc/ssh/sshd_config.d/e2e.conf"
mkdir -p "$T/etc/systemd/system/ssh.service.d"
cat > "$T/etc/systemd/system/ssh.service.d/hostkey.conf" <<'EOT'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -f /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
EOT
touch "$T/.dcos-rs-nsbase-1"
rm -rf "$D"; mv "$T" "$D"
