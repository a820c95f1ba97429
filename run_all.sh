#!/usr/bin/env bash
# Rebuild every figure of the paper companion, or run the tests.
#
#   ./run_all.sh                      set up .venv on first use, rebuild all figures (cpu profile)
#   ./run_all.sh --profile smoke      quick functional check of every notebook
#   ./run_all.sh --only 01,04         rebuild only these notebooks
#   ./run_all.sh --test               pytest tests/, pytest --nbval notebooks/ (twice: as is, and
#                                     under another float rounding)
#   ./run_all.sh --lab                JupyterLab at notebooks/ on 127.0.0.1 (token login)
set -uo pipefail
cd "$(dirname "$0")"

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Options:
  --profile smoke|cpu|paper   parameters from params/<profile>.yaml (default: cpu)
  --only NN[,NN...]           notebook numbers to run (default: all)
  --test                      run the test suites instead of rebuilding figures
  --lab                       start JupyterLab from .venv at notebooks/, bound to 127.0.0.1
                              with token authentication (remote: use an SSH tunnel)
  --port N                    JupyterLab's port with --lab (default 8888)
  --no-browser                with --lab: print the URL instead of opening a browser
  -- ARGS...                  with --lab: further options for jupyter lab (e.g. --allow-root)
  -h, --help                  this help

Environment: PYTHON (interpreter used to create .venv, default python3; the lock is for 3.11),
EQUIVLIB_UNLOCKED=1 (other Pythons: install only the direct pins of requirements.txt),
DATA_DIR (downloaded datasets, paper profile), WANDB_MODE (default offline).
EOF
}

profile=cpu
profile_given=0
only=""
only_given=0
mode=rebuild
test_given=0
lab_given=0
port=8888
lab_option=""  # the first option given that only --lab uses
browser=1
jupyter_extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) [ $# -ge 2 ] || { echo "run_all.sh: error: --profile needs a value" >&2; exit 2; }
                   profile="$2"; profile_given=1; shift 2 ;;
        --profile=*) profile="${1#*=}"; profile_given=1; shift ;;
        --only) [ $# -ge 2 ] || { echo "run_all.sh: error: --only needs a value" >&2; exit 2; }
                only="$2"; only_given=1; shift 2 ;;
        --only=*) only="${1#*=}"; only_given=1; shift ;;
        --test) mode=test; test_given=1; shift ;;
        --lab) mode=lab; lab_given=1; shift ;;
        --port) [ $# -ge 2 ] || { echo "run_all.sh: error: --port needs a value" >&2; exit 2; }
                port="$2"; lab_option=${lab_option:---port}; shift 2 ;;
        --port=*) port="${1#*=}"; lab_option=${lab_option:---port}; shift ;;
        --no-browser) browser=0; lab_option=${lab_option:---no-browser}; shift ;;
        --) shift; jupyter_extra=("$@"); lab_option=${lab_option:--- ARGS}; break ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: error: unknown argument '$1' (see ./run_all.sh --help)" >&2; exit 2 ;;
    esac
done

# options that the chosen run would ignore are refused, not dropped silently
refuse() { echo "run_all.sh: error: $1" >&2; exit 2; }
if [ "$test_given" = 1 ] && [ "$lab_given" = 1 ]; then
    refuse "--test and --lab are different runs: give one of them (or neither, to rebuild)"
fi
what_runs() {
    case "$mode" in
        test) echo "--test runs pytest tests/ and every notebook with nbval at its committed smoke defaults" ;;
        lab) echo "--lab opens JupyterLab at notebooks/ (the executed copies of a rebuild are in build/<profile>/)" ;;
    esac
}
if [ "$mode" != rebuild ] && [ "$only_given" = 1 ]; then
    refuse "--only chooses the notebooks of a rebuild; $(what_runs): leave --only out"
fi
if [ "$mode" != rebuild ] && [ "$profile_given" = 1 ]; then
    refuse "--profile chooses the parameters of a rebuild; $(what_runs): leave --profile out"
fi
if [ "$mode" != lab ] && [ -n "$lab_option" ]; then
    refuse "$lab_option applies only with --lab: add --lab to open JupyterLab, or leave $lab_option out"
fi
case "$port" in
    ''|*[!0-9]*) echo "run_all.sh: error: --port '$port' is not a port number (e.g. --port 8889)" >&2
                 exit 2 ;;
esac
# 1-65535 (compared as text first: a long number would overflow the shell's arithmetic)
port_digits=${port#"${port%%[!0]*}"}  # without leading zeros
if [ -z "$port_digits" ] || [ ${#port_digits} -gt 5 ] || [ "$port_digits" -gt 65535 ]; then
    refuse "--port $port is not a usable port: give one from 1 to 65535 (e.g. --port 8889)"
fi
port=$port_digits
if [ "$mode" = rebuild ] && [ ! -f "params/$profile.yaml" ]; then
    known=$(ls params/*.yaml 2>/dev/null | xargs -n1 basename | sed 's/\.yaml$//' | paste -sd, -)
    echo "run_all.sh: error: unknown profile '$profile': expected one of $known" >&2
    exit 2
fi

# ---- set-up: create or update .venv from requirements.lock when the requirements changed ----
# requirements.lock pins every package (tools/lock_environment.sh regenerates it from the direct
# pins of requirements.txt) and is for CPython 3.11 on Linux x86_64. Elsewhere EQUIVLIB_UNLOCKED=1
# installs only the direct pins and marks .venv as unlocked ($VENV/.unlocked-environment).
VENV=.venv
stamp_file="$VENV/.installed-requirements"
unlocked_file="$VENV/.unlocked-environment"
case "${EQUIVLIB_UNLOCKED:-}" in
    ''|0) lock_mode=locked ;;
    1) lock_mode=unlocked ;;
    *) echo "run_all.sh: error: EQUIVLIB_UNLOCKED='$EQUIVLIB_UNLOCKED': set it to 1 (install" \
            "only the direct pins of requirements.txt, unlocked) or leave it unset" >&2
       exit 2 ;;
esac
if [ ! -f requirements.lock ]; then
    echo "run_all.sh: error: requirements.lock is missing: restore it" \
         "(git checkout requirements.lock) or regenerate it (tools/lock_environment.sh)" >&2
    exit 2
fi
want=$(cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
[ "$lock_mode" = unlocked ] && want="unlocked $want"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp_file" 2>/dev/null)" != "$want" ]; then
    # an existing .venv keeps its interpreter; PYTHON only chooses the one that creates it
    if [ -x "$VENV/bin/python" ]; then py="$VENV/bin/python"; else py="${PYTHON:-python3}"; fi
    pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
    if [ "$lock_mode" = unlocked ]; then
        case "$pyver" in
            3.10|3.11|3.12) ;;
            *) echo "run_all.sh: error: need Python 3.10-3.12 to create .venv (set PYTHON=...)" >&2
               exit 2 ;;
        esac
    elif [ "$pyver" != 3.11 ]; then
        if [ -x "$VENV/bin/python" ]; then
            found="$VENV has Python $pyver"; fix="rm -rf $VENV && PYTHON=python3.11 ./run_all.sh"
        else
            found="'$py' is ${pyver:+Python }${pyver:-not a working interpreter}"
            fix="PYTHON=python3.11 ./run_all.sh"
        fi
        echo "run_all.sh: error: requirements.lock is for Python 3.11, but $found: run $fix," \
             "or EQUIVLIB_UNLOCKED=1 ./run_all.sh (Python 3.10-3.12) to install only the direct" \
             "pins of requirements.txt, unlocked (not the environment of the committed outputs)" >&2
        exit 2
    elif [ "$(uname -s) $(uname -m)" != "Linux x86_64" ]; then
        echo "run_all.sh: error: requirements.lock is for Linux x86_64, but this machine is" \
             "$(uname -s) $(uname -m): run EQUIVLIB_UNLOCKED=1 ./run_all.sh to install only the" \
             "direct pins of requirements.txt, unlocked (not the environment of the committed outputs)" >&2
        exit 2
    fi
    if [ "$lock_mode" = locked ]; then
        echo "setting up $VENV from requirements.lock (first use or requirements changed;" \
             "several minutes, log: $VENV/install.log)"
    else
        echo "setting up $VENV UNLOCKED from the direct pins of requirements.txt" \
             "(EQUIVLIB_UNLOCKED=1, Python $pyver; several minutes, log: $VENV/install.log)"
    fi
    start=$SECONDS
    [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV" || exit 1
    rm -f "$stamp_file" "$unlocked_file"
    canonical() { sed -E 's/[ =@;].*//' | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/-/g' | LC_ALL=C sort -u; }
    install_environment() {
        if [ "$lock_mode" = unlocked ]; then
            "$VENV/bin/python" -m pip install -r requirements.txt
            return
        fi
        # the lock is complete: no resolution; then what the lock does not name goes (an older
        # lock's or an unlocked install's leftovers), except pip and the project itself
        "$VENV/bin/python" -m pip install --no-deps -r requirements.lock || return
        local stale
        stale=$(LC_ALL=C comm -23 \
            <("$VENV/bin/python" -m pip freeze --all --exclude-editable | grep -v '^[#-]' | canonical) \
            <(grep -v '^[#-]' requirements.lock | canonical) | grep -vx -e pip -e equivlib)
        [ -z "$stale" ] || "$VENV/bin/python" -m pip uninstall -y $stale
    }
    if ! { install_environment \
           && "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -e . \
           && "$VENV/bin/python" -m pip check; } >"$VENV/install.log" 2>&1; then
        grep -v '^WARNING: Location' "$VENV/install.log" | tail -n 25 >&2
        echo "run_all.sh: error: installing requirements failed (full log: $VENV/install.log)" >&2
        exit 1
    fi
    [ "$lock_mode" = locked ] || echo "installed with EQUIVLIB_UNLOCKED=1 on Python $pyver" \
        "from requirements.txt (direct pins only), not from requirements.lock" >"$unlocked_file"
    echo "$want" >"$stamp_file"
    echo "set-up done in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1))"
fi

export WANDB_MODE="${WANDB_MODE:-offline}"
export MPLBACKEND="${MPLBACKEND:-Agg}"
export PYTHONHASHSEED=0
export PYDEVD_DISABLE_FILE_VALIDATION=1
PY="$VENV/bin/python"

if [ "$mode" = rebuild ]; then
    args=(--profile "$profile")
    # passed on whenever given: an empty --only is an error there, not "run everything"
    [ "$only_given" = 1 ] && args+=(--only "$only")
    # jupyter kernels warn on stderr about local TCP transport: noise for this use. exec: the
    # driver takes this process's place, so `kill PID` (SIGTERM) of run_all.sh reaches it and
    # it ends every process of the run (see tools/run_notebooks.py)
    exec "$PY" tools/run_notebooks.py "${args[@]}" 2> >(grep -v --line-buffered 'TCP without encryption' >&2)
fi

# ---- JupyterLab: localhost only, never without a token (Jupyter generates one) ----
if [ "$mode" = lab ]; then
    # the project is the root (build/cpu/ stays reachable); the browser opens at notebooks/
    lab_args=(--ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks
              --ServerApp.ip=127.0.0.1 --ServerApp.port="$port"
              --ServerApp.port_retries=0)
    [ "$browser" = 1 ] || lab_args+=(--no-browser)
    lab_args+=("${jupyter_extra[@]}")
    if [ "$(id -u)" = 0 ] && [[ " ${jupyter_extra[*]} " != *" --allow-root "* ]]; then
        echo "run_all.sh: error: JupyterLab refuses to run as root; run it as a normal user" \
             "or, in a container, add: ./run_all.sh --lab -- --allow-root" >&2
        exit 2
    fi
    # a user config with token '' and no password would open the server to every local user
    lab_config=$("$VENV/bin/jupyter" lab --show-config "${lab_args[@]}" 2>/dev/null)
    if grep -Eq "^ +\.token = ''$" <<<"$lab_config" \
       && ! grep -Eq "^ +\.(hashed_)?password = '.+'$" <<<"$lab_config"; then
        echo "run_all.sh: error: your Jupyter config sets an empty token (no authentication);" \
             "remove that setting (see: $VENV/bin/jupyter lab --show-config)" >&2
        exit 2
    fi
    # a port that cannot be served (in use, privileged) fails here, before the banner
    "$PY" - "$port" <<'PYEOF' || exit 2
import errno, socket, sys
port = int(sys.argv[1])
probe = socket.socket()
probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Jupyter binds
try:
    probe.bind(("127.0.0.1", port))
except OSError as exc:
    why = {errno.EADDRINUSE: "is in use (another JupyterLab?)",
           errno.EACCES: "needs root (ports below 1024 are privileged)"}.get(
        exc.errno, f"cannot be bound ({exc.strerror})")
    print(f"run_all.sh: error: port {port} on 127.0.0.1 {why}; pick another with --port N, "
          f"e.g. --port {8889 if port != 8889 else 8890}", file=sys.stderr)
    sys.exit(2)
PYEOF
    echo "JupyterLab at notebooks/ on http://127.0.0.1:$port, token login (the URL with the token follows)"
    echo "remote machine? do not open the port; tunnel it from your computer:"
    echo "  ssh -L $port:localhost:$port $(hostname)   (or however you reach this machine)"
    echo "then open the http://localhost:$port/lab/...?token=... URL below on your computer. Ctrl-C stops it."
    exec "$VENV/bin/jupyter" lab "${lab_args[@]}"
fi

# ---- tests: library tests, then the notebooks' stored outputs; neither may touch figures/ ----
figures_sum() { find figures -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum; }
before=$(figures_sum)
status=0
echo "== ruff check"
"$VENV/bin/ruff" check equivlib tests tools benchmarks || status=1
echo "== pytest tests/"
WANDB_MODE=disabled "$PY" -m pytest tests/ -q || status=1
nbval() {  # the notebooks at their smoke defaults against their stored outputs; fresh store each pass
    rm -rf build/results build/checkpoints
    WANDB_MODE=disabled "$PY" -m pytest --nbval notebooks/ -q -p no:cacheprovider \
        --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg "$@"
}
echo "== pytest --nbval notebooks/"
nbval || status=1
# portability: the same comparison with float rounding changed (convolutions off oneDNN, one
# thread; tools/float_perturbation/sitecustomize.py, inherited by every kernel, training
# worker and torchrun process); an output that another CPU would change fails here
echo "== pytest --nbval notebooks/ under another float rounding (portability)"
PYTHONPATH="$PWD/tools/float_perturbation${PYTHONPATH:+:$PYTHONPATH}" nbval || status=1
if [ "$(figures_sum)" != "$before" ]; then
    echo "run_all.sh: error: running the tests modified files under figures/" >&2
    status=1
fi
[ $status -eq 0 ] && echo "all test suites passed" || echo "run_all.sh: some test suites FAILED" >&2
exit $status
