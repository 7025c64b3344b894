#!/usr/bin/env bash
# Drives bosun-server with the third-party CLI `circleci-env-cli` (PyPI, pinned 0.3.1; built on
# pycircleci 0.7.0): project env vars (API v1.1) and contexts + their env vars (API v2).
# Env: BOSUN_URL, BOSUN_TOKEN (may create contexts: the admin token), BOSUN_SLUG (gh/acme/widgets).
# Optional: CLI (path of the circleci-env-cli executable; default: circleci-env-cli on PATH).
# The CLI exits 0 even when a variable call failed (it only logs "> Error: ..."), so every
# check here reads its output as well as its exit code. One PASS/FAIL line per call; exit 1 on FAIL.
set -u
: "${BOSUN_URL:?}" "${BOSUN_TOKEN:?}" "${BOSUN_SLUG:?}"
CLI=${CLI:-circleci-env-cli}
OWNER=${BOSUN_SLUG%/*}             # gh/acme: the CLI's "org slug" form for context operations
VCS=${BOSUN_SLUG%%/*}
ORG=${OWNER#*/}
export CIRCLE_API_URL="${BOSUN_URL%/}/api"   # same as -u/--api-url; pycircleci adds /v1.1 or /v2
export CIRCLE_TOKEN="$BOSUN_TOKEN"           # same as -t/--token
SUFFIX=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
VAR="BOSUN_CLI_CHECK_${SUFFIX^^}"
CTX="bosun-cli-check-$SUFFIX"
passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out" "$out.env"' EXIT

# run NAME EXPECT_REGEX STDIN -- ARGS...: PASS when the CLI exits 0, prints EXPECT_REGEX and no "Error".
run() {
  local name=$1 expect=$2 input=$3
  shift 4
  if printf '%s' "$input" | "$CLI" "$@" >"$out" 2>&1 && grep -Eq -- "$expect" "$out" && ! grep -q 'Error' "$out"; then
    passed=$((passed + 1))
    echo "PASS $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name: $(tr '\n' ' ' <"$out" | cut -c1-400)"
  fi
}

# Project variables: POST/GET/DELETE /api/v1.1/project/gh/acme/widgets/envvar[/NAME]
run project-var-add "Successfully added/updated variable: $VAR" "" -- -p "$BOSUN_SLUG" -e "$VAR=cli-secret-1234"
run project-var-list "^$VAR\$" "" -- -p "$BOSUN_SLUG" -l
printf 'A_%s=a\nB_%s=b=c\n' "$VAR" "$VAR" >"$out.env"
run project-var-add-file "Successfully added/updated variable: B_$VAR" "" -- -p "$BOSUN_SLUG" -ef "$out.env"
run project-var-delete "Successfully deleted variable: $VAR" "" -- -p "$BOSUN_SLUG" -e "$VAR" -d
run project-var-delete-two "Successfully deleted variable: B_$VAR" "" -- -p "$BOSUN_SLUG" -e "A_$VAR" -e "B_$VAR" -d
run project-var-gone "Project variables" "" -- -p "$BOSUN_SLUG" -l
if grep -q "^$VAR\$" "$out"; then failed=$((failed + 1)); echo "FAIL project-var-gone: $VAR still listed"; fi

# Contexts: GET /api/v2/context?owner-type=organization&owner-slug=gh/acme (paginated on
# next_page_token), POST /api/v2/context when the name is new (the CLI asks; we answer y),
# PUT/GET/DELETE /api/v2/context/{id}/environment-variable[/NAME], DELETE /api/v2/context/{id}.
run context-create-and-var "Successfully created context: $CTX" "y
" -- -p "$OWNER" -c "$CTX" -e "CTX_VAR=one"
run context-var-update "Successfully added/updated context variable: CTX_VAR" "" -- -p "$OWNER" -c "$CTX" -e "CTX_VAR=two"
run context-var-list "^CTX_VAR\$" "" -- -p "$OWNER" -c "$CTX" -l
# The long vcs name must find the same organization (CircleCI takes github/acme and gh/acme).
case $VCS in gh) LONG=github ;; bb) LONG=bitbucket ;; *) LONG=$VCS ;; esac
run context-list-long-vcs "Context variables \(1\)" "" -- -p "$LONG/$ORG" -c "$CTX" -l
run context-var-delete "Successfully deleted context variable: CTX_VAR" "" -- -p "$OWNER" -c "$CTX" -e CTX_VAR -d
run context-var-list-empty "Context variables \(0\)" "" -- -p "$OWNER" -c "$CTX" -l
run context-delete "Successfully deleted context: $CTX" "y
" -- -p "$OWNER" -c "$CTX" -d

echo "circleci-env-cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
