#!/bin/sh
# Point Claude Code at the buzz gateway __BUZZ_URL__
#
# What this script does, in this order, and nothing else:
#   1. takes your buzz key from $BUZZ_API_KEY, from --key KEY, or asks for it on the terminal;
#   2. checks the key against __BUZZ_URL__ and stops, having written nothing, if it is refused;
#   3. installs Claude Code with npm (@anthropic-ai/claude-code) if the `claude` command is missing;
#   4. sets ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN in the "env" block of ~/.claude/settings.json,
#      keeping every other setting, after saving a copy of the file next to it;
#   5. says what it changed and how to undo it.
#
# Usage:  curl -fsSL __BUZZ_URL__/sh/claudecode.sh | sh
#         curl -fsSL __BUZZ_URL__/sh/claudecode.sh | sh -s -- [--key KEY] [--dry-run] [--uninstall]
#   --dry-run    show the change, touch nothing
#   --uninstall  remove exactly what this script added (and put back what it replaced)
#
# Running it twice changes nothing the second time. It needs curl (or wget) and Node.js, which
# Claude Code itself needs.

set -eu

BUZZ_URL='__BUZZ_URL__'
SETTINGS_DIR="${CLAUDE_CONFIG_DIR:-$HOME/.claude}"
SETTINGS="$SETTINGS_DIR/settings.json"
STATE="$SETTINGS_DIR/buzz-install.json"

say() { printf 'buzz: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

key="${BUZZ_API_KEY:-}"
mode=install
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --key) [ $# -ge 2 ] || die "--key needs a value"; key="$2"; shift 2 ;;
    --key=*) key="${1#--key=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    --uninstall) mode=uninstall; shift ;;
    -h|--help) sed -n '2,20p' "$0" 2>/dev/null || true; exit 0 ;;
    *) die "unknown option: $1 (try --help)" ;;
  esac
done

command -v node >/dev/null 2>&1 || die "Node.js is needed (Claude Code runs on it): install Node.js 18 or newer from https://nodejs.org or your package manager, then run this again."

# The settings file is edited by Node, which keeps JSON intact; the shell only passes values.
edit_settings() {
  node - "$@" <<'EOF'
const fs = require("fs");
const path = require("path");
const [mode, settings, state, url, token, dryRun] = process.argv.slice(2);
const read = (file) => (fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8") || "{}") : null);
const shown = (k, value) => (k === "ANTHROPIC_AUTH_TOKEN" ? value.slice(0, 17) + "…" : value);
const original = read(settings);
const doc = original === null ? {} : JSON.parse(JSON.stringify(original));
const ours = { ANTHROPIC_BASE_URL: url, ANTHROPIC_AUTH_TOKEN: token };
let record = read(state);
let changes = [];
if (mode === "install") {
  doc.env = doc.env && typeof doc.env === "object" ? doc.env : {};
  const needed = Object.keys(ours).filter((k) => doc.env[k] !== ours[k]);
  // Claude Code warns when both an API key and a token are set: the token replaces the key.
  const clash = "ANTHROPIC_API_KEY" in doc.env;
  if (needed.length === 0 && !clash) {
    console.log("unchanged");
    process.exit(0);
  }
  if (record === null) {
    record = { created_file: original === null, created_env: !(original && original.env), previous: {} };
    for (const k of [...Object.keys(ours), "ANTHROPIC_API_KEY"]) {
      record.previous[k] = k in doc.env ? doc.env[k] : null;
    }
  }
  for (const k of needed) { changes.push(`set env.${k} = ${shown(k, ours[k])}`); doc.env[k] = ours[k]; }
  record.installed = ours; // what to recognise as ours at --uninstall
  if (clash) { changes.push("removed env.ANTHROPIC_API_KEY (Claude Code uses the token instead)"); delete doc.env.ANTHROPIC_API_KEY; }
} else {
  if (record === null || original === null) { console.log("nothing"); process.exit(0); }
  doc.env = doc.env || {};
  for (const [k, before] of Object.entries(record.previous)) {
    const mine = record.installed || {};
    const stillOurs = k in mine ? doc.env[k] === mine[k] || doc.env[k] === undefined : !(k in doc.env);
    if (!stillOurs) continue; // changed by hand since: leave it alone
    if (before === null) { if (k in doc.env) { delete doc.env[k]; changes.push(`removed env.${k}`); } }
    else { doc.env[k] = before; changes.push(`restored env.${k}`); }
  }
  if (record.created_env && Object.keys(doc.env).length === 0) delete doc.env;
}
for (const line of changes) console.log(line);
if (dryRun === "1") process.exit(0);
fs.mkdirSync(path.dirname(settings), { recursive: true, mode: 0o700 });
if (mode === "uninstall" && record.created_file && Object.keys(doc).length === 0) {
  fs.unlinkSync(settings);
  console.log(`deleted ${settings}, which this script had created`);
} else {
  const fileMode = original === null ? 0o600 : fs.statSync(settings).mode & 0o777;
  const temp = `${settings}.buzz-tmp-${process.pid}`;
  fs.writeFileSync(temp, JSON.stringify(doc, null, 2) + "\n", { mode: fileMode });
  fs.chmodSync(temp, fileMode);
  fs.renameSync(temp, settings);
}
if (mode === "install") fs.writeFileSync(state, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
else fs.rmSync(state, { force: true });
EOF
}

if [ "$mode" = uninstall ]; then
  result=$(edit_settings uninstall "$SETTINGS" "$STATE" "$BUZZ_URL" "" "$dry_run")
  case "$result" in
    nothing) say "nothing to undo: this script has not configured $SETTINGS" ;;
    *) [ "$dry_run" = 1 ] && say "dry run: would change $SETTINGS:" || say "undid the buzz settings in $SETTINGS:"
       printf '%s\n' "$result" | sed 's/^/  /' >&2 ;;
  esac
  exit 0
fi

if [ -z "$key" ]; then
  [ -r /dev/tty ] || die "no key: set BUZZ_API_KEY or pass --key KEY"
  printf 'buzz key for %s: ' "$BUZZ_URL" >/dev/tty
  stty -echo </dev/tty 2>/dev/null || true
  IFS= read -r key </dev/tty || true
  stty echo </dev/tty 2>/dev/null || true
  printf '\n' >/dev/tty
fi
case "$key" in
  buzz-*) ;;
  "") die "no key given" ;;
  *) die "that is not a buzz key (buzz keys start with buzz-)" ;;
esac

say "checking the key against $BUZZ_URL"
status=""
if command -v curl >/dev/null 2>&1; then
  status=$(curl -sS -o /dev/null -w '%{http_code}' -H "x-api-key: $key" "$BUZZ_URL/api/key" || true)
elif command -v wget >/dev/null 2>&1; then
  if wget -q -O /dev/null --header="x-api-key: $key" "$BUZZ_URL/api/key"; then
    status=200
  else
    status=refused
  fi
else
  die "curl or wget is needed to reach $BUZZ_URL"
fi
[ "$status" = 200 ] || die "the gateway refused this key (answer: ${status:-none}); nothing was changed"

if ! command -v claude >/dev/null 2>&1; then
  if [ "$dry_run" = 1 ]; then
    say "dry run: would install Claude Code with: npm install -g @anthropic-ai/claude-code"
  elif command -v npm >/dev/null 2>&1; then
    say "installing Claude Code: npm install -g @anthropic-ai/claude-code"
    npm install -g @anthropic-ai/claude-code >&2 || die "npm could not install Claude Code; nothing was changed"
  else
    die "Claude Code is not installed and npm is missing: install Node.js 18+ with npm (https://nodejs.org), then run this again; nothing was changed"
  fi
fi

[ "$dry_run" = 1 ] || [ ! -f "$SETTINGS" ] || [ -f "$STATE" ] || cp -p "$SETTINGS" "$SETTINGS.buzz-backup"
result=$(edit_settings install "$SETTINGS" "$STATE" "$BUZZ_URL" "$key" "$dry_run")
if [ "$result" = unchanged ]; then
  say "Claude Code already goes through $BUZZ_URL; nothing changed"
  exit 0
fi
if [ "$dry_run" = 1 ]; then
  say "dry run: would change $SETTINGS:"
  printf '%s\n' "$result" | sed 's/^/  /' >&2
  exit 0
fi
say "configured Claude Code to use $BUZZ_URL in $SETTINGS:"
printf '%s\n' "$result" | sed 's/^/  /' >&2
[ -f "$SETTINGS.buzz-backup" ] && say "the file as it was is saved in $SETTINGS.buzz-backup"
say "undo with: curl -fsSL $BUZZ_URL/sh/claudecode.sh | sh -s -- --uninstall"
