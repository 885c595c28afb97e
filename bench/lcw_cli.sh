# Sourced by the bench scripts that drive lcw-cli (after they cd to the repository root): sets
# CLI (building lcw-cli into $BUILD, default build/, when it is missing) and TMP, a temporary
# folder removed on exit.
BUILD=${BUILD:-build}
CLI="$BUILD/app/lcw-cli"
[ -x "$CLI" ] || cmake --build "$BUILD" --target lcw-cli >&2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
