#!/usr/bin/env bash
# Air-gapped k3s install for node k8s-worker-03 (agent), k3s v1.34.2+k3s1.
# Rendered by `bootstrap render`; bootstrap uploads this script with, in the
# same directory: `k3s` (the binary), `config.yaml`, and `k3s.sha256` when
# the inventory pins no checksum. Optional `k3s-airgap-images-*` archives are
# copied to the agent image directory.
#
# Idempotent: when the recorded version, binary checksum, config hash and
# script hash match and the installed files are intact, it changes nothing
# and exits 0. BOOTSTRAP_ROOT (a directory prefix) and BOOTSTRAP_SYSTEMCTL
# exist for tests.
set -euo pipefail

K3S_VERSION='v1.34.2+k3s1'
K3S_ROLE='agent'
UNIT_NAME='k3s-agent'
EXPECTED_SHA256=''

ROOT="${BOOTSTRAP_ROOT:-}"
SYSTEMCTL="${BOOTSTRAP_SYSTEMCTL:-systemctl}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN_DST="${ROOT}/usr/local/bin/k3s"
CONFIG_DIR="${ROOT}/etc/rancher/k3s"
UNIT_FILE="${ROOT}/etc/systemd/system/${UNIT_NAME}.service"
IMAGES_DIR="${ROOT}/var/lib/rancher/k3s/agent/images"
STATE_FILE="${ROOT}/var/lib/bootstrap/k3s-install.state"

die() {
  echo "install.sh (k8s-worker-03): $*" >&2
  exit 1
}

sha256_of() {
  sha256sum "$1" | awk '{print $1}'
}

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  die "must run as root"
fi
[ -f "${HERE}/config.yaml" ] || die "missing ${HERE}/config.yaml (bootstrap uploads it next to this script)"
if [ -z "$EXPECTED_SHA256" ]; then
  [ -f "${HERE}/k3s.sha256" ] || die "no pinned checksum and no ${HERE}/k3s.sha256"
  EXPECTED_SHA256="$(awk '{print $1; exit}' "${HERE}/k3s.sha256")"
fi
case "$EXPECTED_SHA256" in
  *[!0-9a-f]* | "") die "k3s checksum is not a lowercase sha256: ${EXPECTED_SHA256}" ;;
esac
[ "$(printf %s "$EXPECTED_SHA256" | wc -c)" -eq 64 ] || die "k3s checksum is not a sha256 (64 hex digits)"

# Registry mirrors and what the embedded registry shares: staged next to this
# script, installed below; k3s reads registries.yaml at startup
# (k3s docs private-registry.md).
cat >"${HERE}/registries.yaml" <<'BOOTSTRAP_REGISTRIES'
mirrors:
  '*': {}
BOOTSTRAP_REGISTRIES
registries_installed() {
  cmp -s "${HERE}/registries.yaml" "${CONFIG_DIR}/registries.yaml"
}

desired="version=${K3S_VERSION} role=${K3S_ROLE} binary=${EXPECTED_SHA256} config=$(sha256_of "${HERE}/config.yaml") script=$(sha256_of "${BASH_SOURCE[0]}")"

if [ -f "$STATE_FILE" ] && [ "$(cat "$STATE_FILE")" = "$desired" ] \
  && [ -x "$BIN_DST" ] && [ "$(sha256_of "$BIN_DST")" = "$EXPECTED_SHA256" ] \
  && cmp -s "${HERE}/config.yaml" "${CONFIG_DIR}/config.yaml" && [ -f "$UNIT_FILE" ] && registries_installed; then
  echo "k3s ${K3S_VERSION} (${K3S_ROLE}) already installed with this configuration: no change"
  exit 0
fi

# The binary: verified before it replaces anything.
if ! [ -x "$BIN_DST" ] || [ "$(sha256_of "$BIN_DST")" != "$EXPECTED_SHA256" ]; then
  [ -f "${HERE}/k3s" ] || die "missing ${HERE}/k3s (bootstrap uploads the binary next to this script)"
  actual="$(sha256_of "${HERE}/k3s")"
  [ "$actual" = "$EXPECTED_SHA256" ] || die "checksum mismatch for ${HERE}/k3s: expected ${EXPECTED_SHA256}, got ${actual}"
  install -d -m 0755 "$(dirname "$BIN_DST")"
  install -m 0755 "${HERE}/k3s" "${BIN_DST}.new"
  mv -f "${BIN_DST}.new" "$BIN_DST"
fi

# Air-gap image archives, when shipped.
for img in "${HERE}"/k3s-airgap-images-*; do
  [ -e "$img" ] || continue
  install -D -m 0644 "$img" "${IMAGES_DIR}/$(basename "$img")"
done

# The configuration (holds the cluster token: 0600).
install -d -m 0755 "$CONFIG_DIR"
install -m 0600 "${HERE}/config.yaml" "${CONFIG_DIR}/config.yaml.new"
mv -f "${CONFIG_DIR}/config.yaml.new" "${CONFIG_DIR}/config.yaml"

# Registry mirrors (no secrets: endpoints and CA certificates).
install -m 0644 "${HERE}/registries.yaml" "${CONFIG_DIR}/registries.yaml.new"
mv -f "${CONFIG_DIR}/registries.yaml.new" "${CONFIG_DIR}/registries.yaml"

# The systemd unit.
install -d -m 0755 "$(dirname "$UNIT_FILE")"
cat >"${UNIT_FILE}.new" <<'UNIT'
[Unit]
Description=Lightweight Kubernetes (agent)
Documentation=https://docs.k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=exec
EnvironmentFile=-/etc/default/%N
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s agent
UNIT
mv -f "${UNIT_FILE}.new" "$UNIT_FILE"

"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable "$UNIT_NAME"
"$SYSTEMCTL" restart "$UNIT_NAME"

install -d -m 0755 "$(dirname "$STATE_FILE")"
printf '%s\n' "$desired" >"$STATE_FILE"
echo "k3s ${K3S_VERSION} (${K3S_ROLE}) installed and started"
