#!/usr/bin/env bash
# Packs what `mpirun -n 2 kiln-ddp` needs on a GPU machine that cannot download anything:
# Open MPI's Debian packages with the libraries they need that a base Debian 12 lacks, and the
# data-parallel W6 benchmark built against them. Run it once here, in the project's root:
#
#   bash benches/gpu/mpi-pack.sh
#
# It fills the git-ignored folder .mpi/ (debs/, kiln-ddp, run.sh). Carry ".mpi" to the GPU
# machine and run `bash .mpi/run.sh`, which unpacks the packages under /opt/ompi (not over /:
# `dpkg -x pkg.deb /opt/ompi`), points PATH, LD_LIBRARY_PATH and OPAL_PREFIX there, and runs
# the baseline (plain W6, one process), W6 through DDP on one process, and W6 on 2 processes
# sharing the GPU. Results: one JSON line each on stdout.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
profile=${CARGO_PROFILE:-release}
out=.mpi
mkdir -p "$out/debs" /tmp/amd64-mpi/partial

# Building needs the headers (libopenmpi-dev) and libclang for the bindings' bindgen.
if ! dpkg -s libopenmpi-dev openmpi-bin libclang-dev >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin libclang-dev >/dev/null
fi

# The runtime packages and everything they depend on, less what every Debian system has
# (priority required/important, and the C/C++ runtimes, which must stay the system's own).
# Checked here: with the system's Open MPI, PMIx and hwloc directories hidden (tmpfs mounted
# over them), the unpacked mpirun.openmpi runs 2 ranks of the MPI tests.
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-mpi'
apt-get $o update -qq
wanted=$(apt-cache $o depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances --no-pre-depends openmpi-bin openmpi-common libopenmpi3 \
    | grep -E '^[a-z0-9]' | sort -u)
keep=()
for p in $wanted; do
    case "$p" in
        libc6|libgcc-s1|libstdc++6|libc-bin|debconf|perl-base|dpkg|tar|coreutils|libcrypt1) continue ;;
    esac
    # awk reads to the end: exiting early would kill apt-cache with SIGPIPE (fatal under pipefail).
    prio=$(apt-cache $o show "$p" 2>/dev/null | awk -F': ' '/^Priority:/ && !seen {print $2; seen = 1}')
    [ "$prio" = required ] || [ "$prio" = important ] || keep+=("$p")
done
(cd "$out/debs" && rm -f ./*.deb && apt-get $o download "${keep[@]}" >/dev/null)
echo "packed ${#keep[@]} packages: ${keep[*]}"

cargo build --profile "$profile" -p kiln-bench --bin kiln-ddp --features mpi -j 2
dir=$profile; [ "$profile" = dev ] && dir=debug
# Stripped and xz-compressed: the carry is limited to 64 MiB (run.sh unpacks it).
rm -f "$out/kiln-ddp" "$out/kiln-ddp.xz"
strip -o "$out/kiln-ddp" "target/$dir/kiln-ddp"
xz -T2 -6 "$out/kiln-ddp"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine, from the project's root, with .mpi carried: unpack Open MPI under
# /opt/ompi and run data-parallel W6 alone and on 2 processes sharing the one GPU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=${OMPI_UNPACK:-/opt/ompi}
mkdir -p "$prefix"
for f in "$here"/debs/*.deb; do dpkg -x "$f" "$prefix"; done
lib="$prefix/usr/lib/x86_64-linux-gnu"
export PATH="$prefix/usr/bin:$PATH"
export LD_LIBRARY_PATH="$lib:$lib/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Relocates Open MPI: its helpers, plugins and help texts are found under the prefix, not /usr.
export OPAL_PREFIX="$prefix/usr" OPAL_SYSCONFDIR="$prefix/etc/openmpi" PMIX_INSTALL_PREFIX="$lib/pmix2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# dpkg -x does not make Debian's alternatives links: mpirun is mpirun.openmpi.
mpirun="$prefix/usr/bin/mpirun.openmpi"
"$mpirun" --version | head -1
[ -x "$here/kiln-ddp" ] || { xz -dk "$here/kiln-ddp.xz" && chmod +x "$here/kiln-ddp"; }
bench="$here/kiln-ddp"
mca=(--oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
"$bench" --plain "$@"
"$bench" "$@"
"$mpirun" -n 2 "${mca[@]}" "$bench" "$@"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
