#!/bin/sh
# The repository never refers to documents that are not in it: no file cites
# the old shared notes (the contract is proto/, indexed by proto/README.md).
# Run from the source root; build trees and .git are skipped.
cd "${1:-.}" || exit 2
pattern='PROTOCOL\(\.md\| §\)\|PITFALLS\|DESIGN\(\.md\| "\)\|\.\./shared'
hits=$(grep -rnI -e "$pattern" . --exclude-dir=.git --exclude-dir='build*' \
       --exclude-dir=var --exclude=docs_self_contained.sh)
if [ -n "$hits" ]; then
    echo "files citing documents outside the repository (cite proto/... instead):"
    echo "$hits"
    exit 1
fi
echo "docs self-contained: no reference to PROTOCOL, PITFALLS, DESIGN or ../shared"
