#!/bin/sh
# Refresh the portal's vendored front-end files from the npm registry (nothing is loaded from a
# CDN at run time).  Each package's files go to src/mliplake/web/static/vendor/<name>/ with its
# licence; the versions are the ones pinned below.  Run from the repository root.
set -eu
DEST=src/mliplake/web/static/vendor
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fetch() {  # fetch PACKAGE@VERSION DIR FILE...
  spec=$1; dir=$2; shift 2
  (cd "$TMP" && rm -rf package && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz && rm ./*.tgz)
  mkdir -p "$DEST/$dir"
  for f in "$@"; do cp "$TMP/package/$f" "$DEST/$dir/"; done
  echo "$spec" > "$DEST/$dir/VERSION"
  rm -rf "$TMP/package"
}

fetch swagger-ui-dist@5.35.0 swagger-ui swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt
fetch 3dmol@2.5.5 3dmol build/3Dmol-min.js build/3Dmol-min.js.LICENSE.txt LICENSE
