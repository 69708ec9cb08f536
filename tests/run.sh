#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need when it is
# missing (registry, image tools, kubectl, libgit2's build deps), then runs every tier:
# format, lints (clippy --all-targets also type-checks the benchmarks), unit tests, and
# integration tests (real registry, real git, real API server).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci buildah:buildah \
            htpasswd:apache2-utils openssl:openssl xz:xz-utils curl:curl flock:util-linux \
            git:git pkg-config:pkg-config pkill:procps ps:procps setsid:util-linux \
            strip:binutils ldd:libc-bin; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
if ! command -v kubectl >/dev/null 2>&1; then need+=(kubernetes-client); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# shared/ (corpus, Kargo CRDs, the API server) sits next to the repository.
if [ -z "${IMAGE_FACTORY_SHARED:-}" ]; then
  export IMAGE_FACTORY_SHARED="$PWD/../shared"
fi
[ -d "$IMAGE_FACTORY_SHARED" ] || { echo "shared/ not found at $IMAGE_FACTORY_SHARED" >&2; exit 2; }

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== unit tests"
cargo test --lib --quiet
echo "== integration tests (real registry, git, Kubernetes API server)"
cargo test --test integration --quiet -- --test-threads 2
