#!/bin/bash
# One simulated host of tests/tests/admin_guide.rs, started inside the
# host's network namespace and a new mount namespace of its own
# (`ip netns exec NS unshare --mount --propagation private host.sh DIR USB`).
# Each directory the guide writes to gets an overlay whose upper layer is
# DIR/up/<dir>: the host sees the machine's files (Debian, /etc/passwd) but
# what the guide changes (useradd, /etc/ponte, /var/lib/ponte, units, root's
# home) stays on this host, and the machine running the test is untouched.
# /usr/local/bin starts empty, so only binaries the guide installs are there.
# USB is the stick shared by every host, mounted at /media/usb.
# Prints `ready`, then stays as the anchor the test's `nsenter -t PID` joins.
set -euo pipefail
dir=$1
usb=$2
for d in /etc /var/lib /usr/local /usr/share/doc /root /media /srv /opt; do
    mkdir -p "$dir/up$d" "$dir/work$d"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$dir/up$d,workdir=$dir/work$d" "$d"
done
mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin
mkdir -p /media/usb /etc/systemd/system
mount --bind "$usb" /media/usb
echo ready
exec sleep infinity
