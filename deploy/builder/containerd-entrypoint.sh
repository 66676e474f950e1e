#!/bin/sh
# Start containerd inside the builder pod. With cgroup v2 and a private cgroup namespace, the
# container's cgroup is our namespace root and holds our own process, so runc could not create
# sibling cgroups for build containers ("no internal processes" rule). Move every process of the
# namespace root into a child cgroup (init) and delegate all controllers, as docker's dind script does.
# Only done when /proc/self/cgroup says we are at a namespace root ("0::/"); a container sharing the
# host's cgroup namespace sees a longer path there and is left alone.
set -eu

if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ "$(cat /proc/self/cgroup)" = "0::/" ]; then
  mkdir -p /sys/fs/cgroup/init
  # A process may exit between reading and moving it; that is fine.
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control
fi

exec containerd "$@"
