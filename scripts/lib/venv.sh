# Sourced by scripts/schemathesis.sh and scripts/interop.sh: makes sure the venv at $1 exists,
# built with the newest Python 3.12+ found (CUSTOS_PYTHON, then PATH, then pyenv's versions),
# and rebuilt if it was made with an older Python while a newer one is now there. Without any
# 3.12+, python3 is used and the caller's warning ($2) is printed.

is_recent() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }

pick_python() {
    local candidate
    for candidate in ${CUSTOS_PYTHON:-} python3.13 python3.12 python3; do
        if is_recent "$candidate"; then
            echo "$candidate"
            return
        fi
    done
    # pyenv keeps the versions it does not select off PATH.
    for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*/bin/python3 2>/dev/null | sort -rV); do
        if is_recent "$candidate"; then
            echo "$candidate"
            return
        fi
    done
    echo "$1" >&2
    echo python3
}

ensure_venv() {
    local venv=$1 warning=$2 python=
    if [[ -x $venv/bin/python ]] && ! is_recent "$venv/bin/python"; then
        python=$(pick_python "$warning")
        if is_recent "$python"; then
            rm -rf "$venv"
        fi
    fi
    if [[ ! -x $venv/bin/python ]]; then
        "${python:-$(pick_python "$warning")}" -m venv "$venv"
    fi
}
