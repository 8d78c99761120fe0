#!/usr/bin/env bash
# The packages as a user gets them (issue 13): packs every publishable package (prepack builds it),
# checks the tarballs with publint and @arethetypeswrong/cli, installs them with plain npm into an
# app outside the workspace (scripts/consumer/, copied to a temporary directory), type-checks the
# app with its own tsconfig and TypeScript from npm, and runs it against an embedded PostgreSQL.
#
#   pnpm test:consumer        (STURDY_CONSUMER_KEEP=1 keeps the temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

work="$(mktemp -d "${TMPDIR:-/tmp}/sturdy-consumer.XXXXXX")"
# As root, PgServer runs PostgreSQL as the postgres user, who must reach the binaries under the app.
chmod 755 "$work"
if [ -n "${STURDY_CONSUMER_KEEP:-}" ]; then
  echo "consumer: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi

# The version the workspace pins in its catalog, so the app gets what the tests ran with.
catalog() {
  local version
  version="$(sed -n "s|^  \"\{0,1\}$1\"\{0,1\}: *\([^ ]*\)$|\1|p" pnpm-workspace.yaml)"
  [ -n "$version" ] || { echo "consumer: $1 is not in the catalog of pnpm-workspace.yaml" >&2; exit 1; }
  echo "$version"
}

echo "consumer: packing"
pnpm --filter "./packages/*" pack --pack-destination "$work/packs" >"$work/pack.log" || {
  cat "$work/pack.log" >&2
  exit 1
}

for tarball in "$work"/packs/*.tgz; do
  echo "consumer: checking $(basename "$tarball")"
  pnpm exec publint run --strict "$tarball"
  # attw does not expand the "./*" pattern: name every module it matches (the internal/ ones are not exported).
  entrypoints=()
  while IFS= read -r module; do entrypoints+=("./$module"); done < <(
    tar -tzf "$tarball" | sed -n 's|^package/dist/\([A-Za-z0-9]*\)\.js$|\1|p' | grep -v '^index$' | sort
  )
  # ESM only by design ("type": "module", no require condition): the esm-only profile leaves out the
  # CommonJS and node10 resolutions, which cannot apply.
  pnpm exec attw "$tarball" --profile esm-only --format table-flipped --no-emoji --no-color \
    --include-entrypoints "${entrypoints[@]}"
done

echo "consumer: installing the tarballs with npm in $work/app"
from_registry=()
for name in effect @effect/sql-pg @effect/platform-node typescript @types/node; do
  version="$(catalog "$name")"
  from_registry+=("$name@$version")
done
cp -R scripts/consumer "$work/app"
cd "$work/app"
npm install --no-audit --no-fund --loglevel=error "$work"/packs/*.tgz "${from_registry[@]}"

echo "consumer: type-checking with $(npx --no-install tsc --version)"
npx --no-install tsc -p tsconfig.json

echo "consumer: checking that internal/ is not exported"
node --input-type=module -e '
  try {
    await import("@sturdy/pg/internal/stack")
    throw new Error("@sturdy/pg/internal/stack is importable")
  } catch (e) {
    if (e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e
  }'

echo "consumer: running dist/main.js"
output="$(timeout 120 node dist/main.js)"
echo "$output"
[ "$(echo "$output" | tail -n 1)" = "OK" ] || { echo "consumer: the app did not print OK" >&2; exit 1; }

echo "consumer: passed in $((SECONDS - started)) s"
