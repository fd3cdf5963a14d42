#!/bin/sh
# The repository never refers to documents that are not in it (the contract
# is proto/, indexed by proto/README.md). Every document named in any file —
# an upper-case name with .md, an upper-case name followed by a section sign,
# or a relative path to a .md file — must exist in the tree. Run from the source root; build trees,
# var/ and .git are skipped.
cd "${1:-.}" || exit 2
files=$(grep -rlI . --exclude-dir=.git --exclude-dir='build*' --exclude-dir=var)
names=$(find . -name '*.md' -not -path './.git/*' -not -path './build*' \
        -exec basename {} \; | sort -u)
bad=""
for f in $files; do
    dir=$(dirname "$f")
    # Named documents and section citations: a file of that name in the tree
    for doc in $(grep -oE '\b[A-Z][A-Z_]{2,}(\.md| §)' "$f" | sed 's/ §$/.md/' | sort -u); do
        echo "$names" | grep -qx "$doc" || bad="$bad
$f: $doc"
    done
    # Relative paths to documents: they must resolve inside the tree
    for path in $(grep -oE '\.\./[A-Za-z0-9_./-]+\.md' "$f" | sort -u); do
        [ -f "$dir/$path" ] && case $(cd "$dir/$(dirname "$path")" && pwd) in
            "$(pwd)"*) continue ;;
        esac
        bad="$bad
$f: $path"
    done
done
if [ -n "$bad" ]; then
    echo "files citing documents that are not in the repository (cite proto/... instead):$bad"
    exit 1
fi
echo "docs self-contained: every document cited is in the repository"
