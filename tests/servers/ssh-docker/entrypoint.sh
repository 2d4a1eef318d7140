#!/bin/sh
# The SSH test server's entrypoint (PID 1 is tini):
#   1. /sys and the cgroup mounts read-write: the container is not --privileged (refused on this kind of host), so
#      dockerd would find them read-only
#   2. root's authorized keys from $AUTHORIZED_KEYS and/or a file mounted at /etc/deploycheck/authorized_keys
#   3. host keys made now, new for every container: the tests read them (`docker exec NAME cat
#      /etc/ssh/ssh_host_*_key.pub`, also printed as "host-key: ..." lines) and write known_hosts, so that ssh
#      checks them strictly, as it would a real server's
#   4. dockerd in the background (log: /var/log/dockerd.log), waited for: sshd answers only once docker does,
#      so "ssh docker info answers" means ready
#   5. sshd in the foreground; SIGTERM stops sshd and dockerd cleanly, either one dying stops the container
# Env: AUTHORIZED_KEYS (public key lines), STORAGE_DRIVER (overlay2 | vfs | auto = dockerd's choice; default
#      overlay2), DOCKERD_ARGS (extra dockerd arguments), DOCKERD_WAIT (seconds, default 60).
set -eu
log() { echo "entrypoint: $*" >&2; }

# 1. /sys and cgroups read-write. A superblock remount (remount,rw) works for /sys and the cgroup tmpfs;
#    the v1 controller mounts are bind mounts of our own cgroup ("mount point is busy"): remount,bind,rw
#    changes the flags of our mount only.
rw_mount() {
    mount -o remount,rw "$1" 2>/dev/null || mount -o remount,bind,rw "$1" 2>/dev/null ||
        log "warning: cannot remount $1 read-write"
}
rw_mount /sys
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    # cgroup v2: remount rw, move ourselves into a child cgroup, delegate the controllers
    rw_mount /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || :
else
    # cgroup v1: a tmpfs with one mount per controller (symlinks like cpu -> cpu,cpuacct are skipped)
    rw_mount /sys/fs/cgroup
    for d in /sys/fs/cgroup/*; do
        [ -L "$d" ] && continue
        [ -d "$d" ] || continue
        if mountpoint -q "$d"; then rw_mount "$d"; fi
    done
fi

# 2. authorized keys: /etc/deploycheck/authorized_keys (mount it, :ro is fine) and/or $AUTHORIZED_KEYS
if [ -n "${AUTHORIZED_KEYS:-}" ]; then
    printf '%s\n' "$AUTHORIZED_KEYS" > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
fi
if ! grep -qs '^[a-z]' /etc/deploycheck/authorized_keys /root/.ssh/authorized_keys; then
    log "no authorized key: mount one at /etc/deploycheck/authorized_keys or set AUTHORIZED_KEYS"
    exit 2
fi

# 3. host keys (the package's were deleted at build: these are this container's own)
ssh-keygen -A >/dev/null
for k in /etc/ssh/ssh_host_*_key.pub; do echo "host-key: $(cat "$k")"; done

# 4. dockerd
SD="${STORAGE_DRIVER:-overlay2}"
set --
[ "$SD" = auto ] || set -- --storage-driver="$SD"
# shellcheck disable=SC2086
dockerd "$@" ${DOCKERD_ARGS:-} >>/var/log/dockerd.log 2>&1 &
DOCKERD_PID=$!
i=0
until docker info >/dev/null 2>&1; do
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "dockerd exited; last lines of /var/log/dockerd.log:"; tail -n 30 /var/log/dockerd.log >&2; exit 1
    fi
    i=$((i + 1))
    if [ "$i" -gt $(( ${DOCKERD_WAIT:-60} * 5 )) ]; then
        log "dockerd did not answer in ${DOCKERD_WAIT:-60}s"; tail -n 30 /var/log/dockerd.log >&2; exit 1
    fi
    sleep 0.2
done
log "dockerd ready ($(docker info --format '{{.ServerVersion}} storage={{.Driver}}'))"

# 5. sshd in the foreground; stop both on SIGTERM/SIGINT
stop() {
    log "stopping"
    kill -TERM "$SSHD_PID" 2>/dev/null || :
    kill -TERM "$DOCKERD_PID" 2>/dev/null || :
    wait "$DOCKERD_PID" 2>/dev/null || :
    exit 0
}
/usr/sbin/sshd -D -e &
SSHD_PID=$!
trap stop TERM INT
log "sshd started"
while kill -0 "$SSHD_PID" 2>/dev/null && kill -0 "$DOCKERD_PID" 2>/dev/null; do
    sleep 2 & wait $! || :
done
log "sshd or dockerd exited"
kill -TERM "$SSHD_PID" "$DOCKERD_PID" 2>/dev/null || :
wait "$DOCKERD_PID" 2>/dev/null || :
exit 1
