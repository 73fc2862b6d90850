#!/usr/bin/env bash
# The harness under Pythons this Debian machine lacks, each in an Ubuntu root made once with debootstrap from
# archive.ubuntu.com (root, debootstrap and that address needed; about a minute and 0.4 GB a release):
#   24.04's CPython 3.12.3, the lent GPU machine's (with its numpy 2.5.2, which needs 3.12):
#     rehearsal             benchmarks/gpu_rehearsal.sh on python3.12: the machine's torch 2.11, numpy 2.5.2, ...
#     machine-suite [ARGS]  the test suite on torch 2.11.0, torchvision 0.26.0 and numpy 2.5.2, every other package
#                           at the lock's version (default: all but the GPU check's full run; ARGS go to pytest)
#     system-torch [COMMAND ...]  COMPETITION_SYSTEM_TORCH=1 ./run.sh COMMAND (default: test) with torch 2.11.0,
#                           torchvision 0.26.0 and numpy 2.5.2 in the system's python3.12, as on a GPU image
#   26.04's CPython 3.14, the newest LTS's (a fresh machine's; 3.14 starts multiprocessing with forkserver):
#     fresh [COMMAND ...]   ./run.sh COMMAND (default: test) as on a fresh machine: setup from the lock, then it
#
#   bash benchmarks/ubuntu.sh rehearsal|machine-suite|system-torch|fresh [ARGS]     # UBUNTU_ROOTS=DIR (default /tmp/ubuntu-roots)
#
# This checkout's files (tracked and untracked, not the git-ignored ones) are copied into the root afresh each run;
# the venvs of rehearsal and machine-suite stay (about 4 GB each: torch's CUDA build). No PostgreSQL server nor
# Chromium runs in a root, so the tests that need one skip. Results: benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-}"
case "$what" in
    rehearsal | machine-suite | system-torch) release=noble python=python3.12 ;;
    fresh) release=resolute python=python3 ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
shift
[[ "$(id -u)" == 0 ]] || { echo "ubuntu: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
root="${UBUNTU_ROOTS:-/tmp/ubuntu-roots}/$release"
mirror="${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}"

if [[ ! -f "$root/.complete" ]]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    log="/tmp/ubuntu-debootstrap-$release.log"
    echo "ubuntu: making an Ubuntu $release root in $root (from $mirror)" >&2
    # every Ubuntu release has the same debootstrap script; Debian's package may predate the release's name
    debootstrap --variant=minbase --components=main,universe \
        --include="$python,$python-venv,python3-pip,git,ca-certificates" "$release" "$root" "$mirror" \
        /usr/share/debootstrap/scripts/gutsy >"$log" 2>&1 || { echo "ubuntu: debootstrap failed ($log)" >&2; exit 1; }
    touch "$root/.complete"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
cert="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"  # a proxy's own authority, where the host trusts one
[[ -f "$cert" ]] && cp "$cert" "$root/etc/ssl/certs/host-ca.crt"

rm -rf "$root/root/main"
mkdir -p "$root/root/main"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$root/root/main" -xf -

# /proc, /dev (with /dev/shm for the loader's workers) as a slave, so that unmounting it leaves the host's alone,
# and ../shared (the real data, where there is one) read-only, where the tests look for it
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
shared=""
if [[ -d ../shared ]]; then
    shared="$root/root/shared"
    mkdir -p "$shared"
    mount --bind ../shared "$shared"
    mount -o remount,bind,ro "$shared"
fi
unmount() {  # a process of the run may still be closing a file: then detached now, unmounted when it has
    umount -R "$root/dev" 2>/dev/null || umount -R -l "$root/dev"
    umount "$root/proc" 2>/dev/null || umount -l "$root/proc"
    [[ -z "$shared" ]] || umount "$shared" 2>/dev/null || umount -l "$shared"
}
trap unmount EXIT

inside=(chroot "$root" env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
        PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180)
case "$what" in
    rehearsal)
        "${inside[@]}" bash -c 'cd /root/main && PYTHON=python3.12 REHEARSAL_VENV=/root/rehearsal-venv \
            bash benchmarks/gpu_rehearsal.sh'
        ;;
    fresh)  # the checkout's own .venv, made by ./run.sh as on a fresh machine (pip's cache stays in the root)
        "${inside[@]}" bash -c 'cd /root/main && python3 -V && ./run.sh "${@:-test}"' -- "$@"
        ;;
    machine-suite)  # the lock's versions but torch, torchvision and numpy at the machine's (and their CUDA ones)
        "${inside[@]}" bash -c 'cd /root/main && PYTHON=python3.12 bash benchmarks/suite_with.sh /root/suite-venv \
            numpy==2.5.2 torch==2.11.0 torchvision==0.26.0 -- "$@"' -- "$@"
        ;;
    system-torch)  # COMPETITION_SYSTEM_TORCH=1 as on a GPU image: torch in the system's python3.12, reused by .venv
        "${inside[@]}" bash -c 'cd /root/main && rm -rf .venv
            python3.12 -c "import torch" 2>/dev/null || python3.12 -m pip install -q --break-system-packages \
                --only-binary=:all: numpy==2.5.2 torch==2.11.0 torchvision==0.26.0
            COMPETITION_SYSTEM_TORCH=1 PYTHON=python3.12 ./run.sh setup
            .venv/bin/python -c "import torch, torchvision, numpy; print(\"venv uses\", torch.__version__, \
                torch.__file__, torchvision.__version__, \"numpy\", numpy.__version__)"
            COMPETITION_SYSTEM_TORCH=1 PYTHON=python3.12 ./run.sh "${@:-test}"' -- "$@"
        ;;
esac
