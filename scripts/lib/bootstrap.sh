# Sourced by scripts/demo, scripts/test and scripts/bench: make .venv with bwc-dock in it.
# Installs Debian packages only when root (a laptop user installs them by hand or skips).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv"

missing_packages() {  # missing_packages PACKAGE...: print those not installed, one a line
    local package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || echo "$package"
    done
}

debian_install() {  # debian_install PACKAGE...: install what is missing, when root
    [[ $(id -u) -eq 0 ]] || return 0
    command -v dpkg-query >/dev/null || return 0
    local missing
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]})) || return 0
    echo "bootstrap: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

debian_install_tool() {  # debian_install_tool PACKAGE...: install, starting no service
    # For packages wanted only for a command they ship (promtool from prometheus): a fresh
    # install neither starts the package's service (policy-rc.d) nor enables it at boot.
    [[ $(id -u) -eq 0 ]] || return 0
    command -v dpkg-query >/dev/null || return 0
    local missing
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]})) || return 0
    local policy=/usr/sbin/policy-rc.d
    local own_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# bwc-dock bootstrap: installing tools, start no service\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local status=0
    debian_install "${missing[@]}" || status=$?
    [[ -z $own_policy ]] || rm -f "$policy"
    if command -v systemctl >/dev/null; then
        for package in "${missing[@]}"; do
            systemctl disable --quiet "$package.service" 2>/dev/null || true
        done
    fi
    return "$status"
}

python_venv() {  # python_venv EXTRAS: create/refresh .venv with bwc-dock[EXTRAS]
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$python" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$extras"
    # reinstall when the dependencies changed since the last install
    if [[ ! -e "$stamp" || "$REPO/pyproject.toml" -nt "$stamp" ]]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2
        if [[ -n "$extras" ]]; then
            "$VENV/bin/python" -m pip install -q -e "$REPO[$extras]" >&2
        else
            "$VENV/bin/python" -m pip install -q -e "$REPO" >&2
        fi
        touch "$stamp"
    fi
}
