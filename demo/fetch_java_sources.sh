#!/usr/bin/env bash
# Fetch the upstream sources of 10 Java libraries (Debian bookworm orig tarballs) to mine JUnit tests.
#
# Usage: demo/fetch_java_sources.sh DEST_DIR
#   DEST_DIR/<name>/      one unpacked upstream tree per library (the repo roots for make_dataset.py)
#   DEST_DIR/.download/   the files apt fetched (orig tarball, debian tarball, .dsc)
# Needs root (it adds a deb-src entry and runs apt-get update). Exits non-zero, naming the library,
# when an orig tarball did not arrive: apt-get source's own exit code is not trusted, because some
# Debian patch files are missing on the mirror while the orig tarball is fine (and vice versa).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DEST_DIR" >&2
    exit 2
fi
DEST=$(mkdir -p "$1" && cd "$1" && pwd)

# name:debian-source-package (found with `apt-cache showsrc <binary package>`)
LIBRARIES=(
    commons-lang3:libcommons-lang3-java
    commons-codec:libcommons-codec-java
    commons-csv:commons-csv
    commons-io:commons-io
    commons-collections4:libcommons-collections4-java
    commons-compress:libcommons-compress-java
    commons-math3:commons-math3
    joda-time:libjoda-time-java
    jsoup:jsoup
    guava:guava-libraries
)

# --- deb-src entry matching the mirror this machine already uses -------------------------------
SRC_LIST=/etc/apt/sources.list.d/assertdistill-deb-src.sources
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    # deb822 format (bookworm default): same URIs/Suites/Components, Types deb -> deb-src
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
elif [[ -f /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list; then
    SRC_LIST=/etc/apt/sources.list.d/assertdistill-deb-src.list
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$SRC_LIST"
else
    echo "error: no /etc/apt/sources.list.d/debian.sources or 'deb' line in /etc/apt/sources.list to mirror" >&2
    exit 1
fi
echo "deb-src entry: $SRC_LIST"
apt-get update -q

# --- download, check, unpack -------------------------------------------------------------------
missing=()
for entry in "${LIBRARIES[@]}"; do
    name=${entry%%:*}
    pkg=${entry#*:}
    dl="$DEST/.download/$name"
    rm -rf "$dl"
    mkdir -p "$dl"
    echo "=== $name (source package $pkg)"
    if ! (cd "$dl" && apt-get source --download-only "$pkg"); then
        echo "warning: apt-get source $pkg exited non-zero; checking what arrived" >&2
    fi
    orig=$(find "$dl" -maxdepth 1 -type f -name '*.orig.tar.*' ! -name '*.asc' | head -n 1)
    if [[ -z "$orig" ]]; then
        echo "error: no .orig.tar.* for $name ($pkg) in $dl" >&2
        missing+=("$name")
        continue
    fi

    # unpack into a scratch dir, then flatten the single top-level directory most tarballs have
    target="$DEST/$name"
    scratch="$DEST/.download/$name.unpack"
    rm -rf "$target" "$scratch"
    mkdir -p "$scratch" "$target"
    tar -xf "$orig" -C "$scratch"
    shopt -s dotglob nullglob
    top=("$scratch"/*)
    if [[ ${#top[@]} -eq 1 && -d "${top[0]}" ]]; then
        mv "${top[0]}"/* "$target"/
    else
        mv "$scratch"/* "$target"/
    fi
    shopt -u dotglob nullglob
    rm -rf "$scratch"

    # licence files at the top of the tree (usually there already)
    while IFS= read -r lic; do
        base=$(basename "$lic")
        [[ -e "$target/$base" ]] || cp "$lic" "$target/$base"
    done < <(find "$target" -mindepth 2 -maxdepth 3 -type f \( -name 'LICENSE*' -o -name 'NOTICE*' \))
    licences=$(cd "$target" && ls -d LICENSE* NOTICE* COPYING* 2>/dev/null | tr '\n' ' ' || true)
    n_java=$(find "$target" -type f -name '*.java' | wc -l)
    echo "fetched $name: $(basename "$orig") -> $target ($n_java .java files; licence files: ${licences:-NONE})"
done

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "error: orig tarball missing for: ${missing[*]}" >&2
    exit 1
fi
echo "all ${#LIBRARIES[@]} libraries in $DEST"
