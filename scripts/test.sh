#!/usr/bin/env bash
# The test command: sets up what the tests need on a fresh machine, then runs `cargo test`.
#
#   scripts/test.sh                      # everything
#   scripts/test.sh --test http_openai   # arguments go to `cargo test` unchanged
#   SETUP_ONLY=1 scripts/test.sh         # only the setup; prints the PATH line for `cargo test`
#
# 1. A Python venv in target/test-venv with tests/requirements.txt (the tests run `python3` from
#    PATH: the openai client, jsonschema, sentencepiece, fake-gcs-server, and transformers with
#    torch for tests/hf_reference.rs). Made once; pip runs again only when tests/requirements.txt
#    differs from the copy kept in the venv, in the background while the tests compile. Its bin/
#    goes first on PATH, so `cargo test` alone works with that PATH (`cargo clean` removes the
#    venv).
# 2. Prometheus for tests/prometheus_dashboard.rs: Debian's `prometheus` package when it is not
#    on PATH (nor WEIR_PROMETHEUS set) and we are root; otherwise the test uses WEIR_PROMETHEUS
#    or unpacks that package into ~/.cache/weir itself.
# 3. kubectl (its built-in kustomize renders deploy/ for tests/deploy.rs): when none is on PATH,
#    Debian's `kubernetes-client` unpacked into target/kubectl (apt-get download, no root needed).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$PWD/target/test-venv
REQS=tests/requirements.txt

# Creates the venv (again if its python no longer runs, e.g. after a Python upgrade).
make_venv() {
  if [ -x "$VENV/bin/python3" ] && "$VENV/bin/python3" -c '' 2>/dev/null; then
    return
  fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv (ensurepip) in a separate package.
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv) >/dev/null
    fi
    python3 -m venv "$VENV" || {
      echo "scripts/test.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
}

make_venv
install_requirements() {
  if ! cmp -s "$REQS" "$VENV/requirements.txt"; then
    rm -f "$VENV/requirements.txt"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check --no-cache-dir -r "$REQS"
    cp "$REQS" "$VENV/requirements.txt" # only after a successful install
  fi
}
export PATH="$VENV/bin:$PATH"

if [ -z "${WEIR_PROMETHEUS:-}" ] && [ "$(id -u)" = 0 ] && ! command -v prometheus >/dev/null 2>&1
then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus) >/dev/null ||
    echo "scripts/test.sh: could not install prometheus; the test will fetch it" >&2
fi

KUBECTL_DIR=$PWD/target/kubectl
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$KUBECTL_DIR/usr/bin/kubectl" ]; then
  (
    tmp=$(mktemp -d) && cd "$tmp" &&
      {
        apt-get download kubernetes-client >/dev/null 2>&1 ||
          { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 &&
            apt-get download kubernetes-client >/dev/null 2>&1; }
      } &&
      dpkg -x kubernetes-client_*.deb "$KUBECTL_DIR" && rm -rf "$tmp"
  ) || echo "scripts/test.sh: could not fetch kubectl (Debian's kubernetes-client)" >&2
fi
extra_path=$VENV/bin
if [ -x "$KUBECTL_DIR/usr/bin/kubectl" ]; then
  extra_path=$extra_path:$KUBECTL_DIR/usr/bin
fi
export PATH="$extra_path:$PATH"

if [ "${SETUP_ONLY:-0}" = 1 ]; then
  install_requirements
  echo "export PATH=\"$extra_path:\$PATH\""
  exit 0
fi
# pip (mostly download and unpack) beside the test build (mostly compiling): on a fresh machine
# the two overlap instead of adding up.
install_requirements &
pip_job=$!
cargo_args=()
for a in "$@"; do
  [ "$a" = "--" ] && break
  cargo_args+=("$a")
done
build_status=0
cargo test --no-run "${cargo_args[@]}" || build_status=$?
wait "$pip_job" || { echo "scripts/test.sh: pip install -r $REQS failed" >&2; exit 1; }
[ "$build_status" = 0 ] || exit "$build_status"
exec cargo test "$@"
