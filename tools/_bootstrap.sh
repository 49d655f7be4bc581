# Shared set-up for tools/test and tools/run; source it, do not run it.
#
#   vk_bootstrap [EXTRAS]   cd to the repository, create .venv if missing, and pip-install the
#                           project (editable, with [EXTRAS]) unless pyproject.toml is unchanged
#                           since the last install (stamp file in .venv).
#   vk_ensure_binaries      build the missing control-plane binaries (etcd, kube-apiserver,
#                           kubectl) into $VKUBELET_BIN_CACHE, with progress on stderr.

VK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VK_VENV=$VK_ROOT/.venv
VK_PY=$VK_VENV/bin/python

vk_say() { printf 'vkubelet: %s\n' "$*" >&2; }

vk_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    vk_say "error: Python >= 3.11 is required (set PYTHON=/path/to/python3.11 or install it)"
    return 1
}

vk_bootstrap() {
    local extras=${1:-} spec=. stamp hash python
    cd "$VK_ROOT"
    if [ ! -x "$VK_PY" ]; then
        python=$(vk_find_python)
        vk_say "creating $VK_VENV with $python"
        "$python" -m venv "$VK_VENV"
    fi
    [ -n "$extras" ] && spec=".[$extras]"
    stamp=$VK_VENV/.vkubelet-installed${extras:+-$extras}
    hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
    # Reinstall when pyproject.toml changed, or when the editable install points at another
    # checkout (a copied or moved tree).
    # (an install with the test extras also satisfies a plain one)
    if [ -z "$extras" ] && [ "$(cat "$VK_VENV/.vkubelet-installed-test" 2>/dev/null)" = "$hash" ]; then
        stamp=$VK_VENV/.vkubelet-installed-test
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ] ||
        ! "$VK_PY" -c 'import sys, vkubelet; sys.exit(vkubelet.__file__ != sys.argv[1])' \
            "$VK_ROOT/src/__init__.py" 2>/dev/null; then
        vk_say "installing vkubelet and its dependencies ($spec) into $VK_VENV"
        "$VK_PY" -m pip install --quiet --disable-pip-version-check --editable "$spec"
        echo "$hash" >"$stamp"
    fi
}

vk_ensure_binaries() {
    "$VK_PY" -m vkubelet.entrypoints.localcluster.binaries >/dev/null
}
