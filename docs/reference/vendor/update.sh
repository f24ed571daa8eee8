#!/usr/bin/env bash
# Re-fetch the vendored renderers of docs/reference/*.html at pinned versions (dev-time only:
# the pages and these files are committed, so neither the gateway nor the tests need Node).
#   docs/reference/vendor/update.sh
set -euo pipefail
ASYNCAPI_REACT=3.2.1
REDOC=2.5.4
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts "@asyncapi/react-component@$ASYNCAPI_REACT" "redoc@$REDOC" >/dev/null
a=node_modules/@asyncapi/react-component
cp "$a/browser/standalone/index.js" "$here/asyncapi-react-standalone.js"
cp "$a/browser/standalone/index.js.LICENSE.txt" "$here/asyncapi-react-standalone.js.LICENSE.txt"
cp "$a/styles/default.min.css" "$here/asyncapi-react.min.css"
cp "$a/LICENSE" "$here/LICENSE-asyncapi-react-component"
# The one network request Redoc makes is the "API docs by Redocly" logo from its CDN; an
# empty src fires the img's onError, which Redoc already handles by hiding it.
sed 's#src:"https://cdn.redoc.ly/redoc/logo-mini.svg"#src:""#' node_modules/redoc/bundles/redoc.standalone.js \
  > "$here/redoc.standalone.js"
grep -q "cdn.redoc.ly" "$here/redoc.standalone.js" && { echo "redoc still refers to its CDN" >&2; exit 1; }
cp node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt "$here/redoc.standalone.js.LICENSE.txt"
cp node_modules/redoc/LICENSE "$here/LICENSE-redoc"
echo "vendored @asyncapi/react-component $ASYNCAPI_REACT and redoc $REDOC into $here"
