#!/usr/bin/env bash
# Prints the version (`version.sh`) or the commit (`version.sh commit`) that the Makefile
# stamps into the binaries and the release names its files with.
#
#   tag v1.2.3 on HEAD        1.2.3
#   4 commits after v1.2.3    1.2.3+4.gabcdef0
#   no tag yet                0.0.0+git20260102.abcdef0   (the commit's date)
#   uncommitted changes       any of the above + ".dirty"
#   no git at all             0.0.0+unknown  (a source tarball: pass VERSION= to make)
#
# No "-" in a version, so it is also a valid Debian version with no revision part.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  [ "${1:-}" = commit ] && echo "" || echo 0.0.0+unknown
  exit 0
fi
dirty=
git diff --quiet HEAD -- 2>/dev/null || dirty=1
if [ "${1:-}" = commit ]; then
  echo "$(git rev-parse HEAD)${dirty:+-dirty}"
  exit 0
fi
if desc=$(git describe --tags --match 'v[0-9]*' --long 2>/dev/null); then
  # v1.2.3-4-gabcdef0: tag, commits since, abbreviated commit
  g=${desc##*-}; rest=${desc%-*}; n=${rest##*-}; tag=${rest%-*}
  v=${tag#v}
  [ "$n" = 0 ] || v="$v+$n.$g"
else
  v="0.0.0+git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=7 HEAD)"
fi
if [ -n "$dirty" ]; then
  case $v in *+*) v="$v.dirty" ;; *) v="$v+dirty" ;; esac
fi
echo "$v"
