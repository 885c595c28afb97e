# Sourced by the bench scripts that drive lcw-cli (after they cd to the repository root): sets
# CLI (building lcw-cli into $BUILD, default build/, when it is missing) and TMP, a temporary
# folder removed on exit, and recipe STEM BODY, which writes $TMP/STEM.json: a recipe of one rule
# over every targetable linear whose JSON object members are BODY, and prints its path.
BUILD=${BUILD:-build}
CLI="$BUILD/app/lcw-cli"
[ -x "$CLI" ] || cmake --build "$BUILD" --target lcw-cli >&2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
recipe() { # file-stem, rule body (JSON object members of one rule over all linears)
  echo "{\"lcw_recipe\": 1, \"name\": \"$1\", \"rules\": [{\"targets\": [\"*\"], $2}]}" > "$TMP/$1.json"
  echo "$TMP/$1.json"
}
