#!/usr/bin/env bash
# Build hems-agent_<version>_<arch>.deb with dpkg-deb, for arm64 (Raspberry Pi OS 64-bit,
# Debian 12+) or amd64, from any machine: the dependencies are fetched as wheels for the
# target (manylinux, CPython 3.11 and 3.13: Debian 12's and 13's python3) and shipped in the
# package, so installing needs no network. Run through `make deb` (it installs the build
# dependencies). Usage: packaging/build-deb.sh ARCH [OUTDIR]
#   DEB_VERSION  package version (default: pyproject's version, Debian revision 1)
#   DEB_PYTHONS  CPython versions to carry wheels for (default: "3.11 3.13")
#   DEB_LINTIAN  yes: check the package with lintian (warnings fail the build)
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:?usage: packaging/build-deb.sh arm64|amd64 [OUTDIR]}
out=${2:-dist}
case "$arch" in
    arm64) platform=aarch64 ;;
    amd64) platform=x86_64 ;;
    *) echo "build-deb.sh: unknown architecture '$arch' (arm64 or amd64)" >&2; exit 2 ;;
esac
pyversion=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
version=${DEB_VERSION:-$pyversion-1}
pythons=${DEB_PYTHONS:-3.11 3.13}
maintainer=${DEB_MAINTAINER:-hems-agent packaging <packaging@hems-agent.example.org>}

work=build/deb
tools=$work/tools          # a venv for pip (the build machine's python3)
root=$work/root-$arch
wheels=$root/usr/share/hems-agent/wheels
mkdir -p "$work" "$out"

if [ ! -x "$tools/bin/pip" ]; then
    python3 -m venv "$tools"
fi
pip=("$tools/bin/python" -m pip --disable-pip-version-check)

rm -rf "$root"
install -d "$root/DEBIAN" "$wheels" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/share/doc/hems-agent" "$root/usr/share/lintian/overrides" \
    "$root/usr/share/man/man1"

# The project's own wheel (pure Python), then its dependency closure for the target; pip's
# HTTP cache makes a rebuild download nothing new.
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$wheels" .
self=$(ls "$wheels"/hems_agent-*.whl)
for py in $pythons; do
    "${pip[@]}" download --quiet --only-binary=:all: --implementation cp \
        --platform "manylinux2014_$platform" --platform "manylinux_2_28_$platform" \
        --platform "manylinux_2_17_$platform" --python-version "$py" \
        --dest "$wheels" "$self"
done
echo "hems-agent==$pyversion" > "$wheels/requirements.txt"
# The gateway installs with --no-index: prove now, offline, that these wheels alone resolve the
# whole closure for every Python carried.
for py in $pythons; do
    "${pip[@]}" install --quiet --dry-run --ignore-installed --no-index --find-links "$wheels" \
        --only-binary=:all: --implementation cp --platform "manylinux2014_$platform" \
        --platform "manylinux_2_28_$platform" --platform "manylinux_2_17_$platform" \
        --python-version "$py" --target "$work/dry-run" -r "$wheels/requirements.txt" || {
        echo "build-deb.sh: the wheels do not install offline for CPython $py on $arch" >&2
        exit 1; }
done
echo "$pythons" > "$wheels/PYTHONS"
(cd "$wheels" && sha256sum -- *.whl > SHA256SUMS)

install -m 0644 systemd/hems-agent.service "$root/lib/systemd/system/hems-agent.service"
ln -s /opt/hems-agent/bin/hems-agent "$root/usr/bin/hems-agent"
install -m 0644 README.md "$root/usr/share/doc/hems-agent/README.md"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/hems-agent/copyright"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
{
    echo "hems-agent ($version) stable; urgency=medium"
    echo
    echo "  * Built from the hems-agent source tree, $(git describe --always --dirty 2>/dev/null || echo unknown)."
    echo
    echo " -- $maintainer  $(LC_ALL=C date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$root/usr/share/doc/hems-agent/changelog.Debian.gz"
gzip -9n < packaging/debian/hems-agent.1 > "$root/usr/share/man/man1/hems-agent.1.gz"
install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/hems-agent"
for script in postinst prerm postrm; do
    sed "s/@VERSION@/$version/g" "packaging/debian/$script" > "$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done
size=$(du -sk --apparent-size "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s|@MAINTAINER@|$maintainer|" packaging/debian/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)

# Reproducible timestamps (the last commit's, if any).
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb="$out/hems-agent_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
if [ "${DEB_LINTIAN:-}" = yes ]; then
    lintian --fail-on error,warning "$deb"
fi
echo "$deb: $(du -k "$deb" | cut -f1) KiB, installed $size KiB, $(ls "$wheels"/*.whl | wc -l) wheels"
