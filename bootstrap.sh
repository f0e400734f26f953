#!/usr/bin/env bash
# Sets up everything wgmesh needs on a Debian machine (as root), then runs one job:
#   ./bootstrap.sh up [wgmesh up options]   → a verified 3-site WireGuard mesh on the built-in lab
#   ./bootstrap.sh test [pytest options]    → the lint gate, then the whole test suite (unit, CLI, real lab)
#   ./bootstrap.sh lint                      → only the lint gate: ruff, mypy, shellcheck
#   ./bootstrap.sh setup                     → only the set-up
# Idempotent: a second run installs nothing and starts at once.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

job="${1:-setup}"; shift || true
case "$job" in up|test|lint|setup) ;; *) echo "usage: $0 up|test|lint|setup [args...]" >&2; exit 2;; esac

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (the lab builds network namespaces; packages are installed with apt)" >&2
  exit 2
fi

# Debian packages: WireGuard (userspace wireguard-go where the kernel has no module), sshd for the lab
# hosts, iptables, ping, Graphviz, venv for Python, and shellcheck for the lint gate; debootstrap and
# systemd-nspawn (systemd-container) for the lab's systemd hosts (--var init=systemd).
pkgs=(wireguard-tools wireguard-go openssh-server openssh-client iptables iproute2 iputils-ping fping
      util-linux procps graphviz python3-venv ca-certificates shellcheck debootstrap systemd-container)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p /run/sshd /etc/wireguard /run/wireguard
chmod 700 /etc/wireguard

if ! command -v terraform >/dev/null 2>&1; then
  echo "bootstrap: terraform (1.x) is required and is not on PATH" >&2
  exit 2
fi

# Python: a virtual environment with wgmesh installed in editable mode (reinstalled when pyproject changes).
py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "bootstrap: Python >= 3.11 required" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.wgmesh-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
# `wgmesh` on PATH for the commands that follow in the README.
if [ ! -e /usr/local/bin/wgmesh ] || [ "$(readlink -f /usr/local/bin/wgmesh)" != "$(readlink -f .venv/bin/wgmesh)" ]; then
  ln -sf "$(pwd)/.venv/bin/wgmesh" /usr/local/bin/wgmesh
fi

# The lint gate: any finding fails it (the README's test command runs it first).
lint() {
  echo "bootstrap: lint: ruff, mypy, shellcheck" >&2
  .venv/bin/ruff check wgmesh tests bench
  .venv/bin/mypy
  shellcheck bootstrap.sh .ci/run bench/run terraform/lab/labctl wgmesh/remote/scripts/*.sh
}

case "$job" in
  setup) echo "bootstrap: ready; try: wgmesh up" >&2 ;;
  up) exec .venv/bin/wgmesh up "$@" ;;
  lint) lint ;;
  test) lint; exec .venv/bin/python -m pytest "$@" ;;
esac
