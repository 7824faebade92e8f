#!/usr/bin/env bash
# Router builds in CI: cross-compiles both daemons for router families (no Docker, no
# OpenWrt SDK), runs `--version` of each under qemu-user, runs the protocol crate's test
# suite under `qemu-mipsel -cpu 24Kc` (32-bit MIPS: no 64-bit atomics, soft float),
# writes the .ipk packages and checks them by parsing them, and prints a size report.
# Installs what it needs itself. Run as root on Debian 12 from anywhere in the repository.
#
#   CROSS_FAMILIES   families to build (default "all": x86_64, aarch64_cortex-a53,
#                    arm_cortex-a7_neon-vfpv4, mipsel_24kc, mips_24kc; or a list of them)
#   CROSS_TEST_FAMILY  where the protocol tests run under qemu (default mipsel_24kc)
#
# Cross builds go to target/cross/, apart from the host build, so neither evicts the other.
set -euo pipefail
cd "$(dirname "$0")/.."

families="${CROSS_FAMILIES:-all}"
test_family="${CROSS_TEST_FAMILY:-mipsel_24kc}"
if [ "$families" = all ]; then
    families="x86_64 aarch64_cortex-a53 arm_cortex-a7_neon-vfpv4 mipsel_24kc mips_24kc"
fi

target_args=()
for family in $families; do
    target_args+=(--target "$family")
done

start=$(date +%s)
timings=""
step() {
    step_name="$1"
    step_start=$(date +%s)
    echo
    echo "==> [cross $(( step_start - start ))s] $step_name"
}
done_step() {
    timings="$timings$(printf '%6ss  %s' "$(( $(date +%s) - step_start ))" "$step_name")\n"
}

step "installing cross tools (qemu-user, rustup targets, rust-src, zig, cargo-zigbuild)"
if ! dpkg-query -W -f='${Status}' qemu-user 2>/dev/null | grep -q "install ok installed"; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
fi
installed_targets="$(rustup target list --installed)"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check ziglang cargo-zigbuild
    # pyenv's Python puts new commands behind shims that exist only after a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    hash -r
fi
echo "zig $(python3 -m ziglang version), $(cargo-zigbuild --version), $(qemu-mipsel --version | head -1)"
done_step

step "xtask's own tests (package writer and checker, tables vs Makefile and Cross.toml)"
cargo test -p xtask --locked
done_step

for family in $families; do
    step "build $family (release)"
    cargo xtask build --target "$family"
    done_step
done

step "--version of both daemons under qemu"
cargo xtask smoke --no-build "${target_args[@]}"
done_step

step "protocol test suite on $test_family under qemu"
cargo xtask test --target "$test_family" -p linkpool-protocol
done_step

step ".ipk packages: write and verify"
rm -rf target/cross/ipk
cargo xtask ipk --no-build "${target_args[@]}"
cargo xtask verify-ipk target/cross/ipk/*.ipk
done_step

step "size report"
cargo xtask size --no-build "${target_args[@]}"
done_step

echo
echo "==> cross steps (seconds):"
printf '%b' "$timings"
echo "==> cross: all passed in $(( $(date +%s) - start ))s"
