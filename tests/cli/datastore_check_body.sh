# The body of test_datastore_check.sh (SQLite) and
# test_postgres_datastore_check.sh (PostgreSQL): `pemba datastore check`
# and `--fix` on one engine, chosen by $engine (sqlite|postgres) in the
# sourcing script, which also sets $work, sources client_expect.sh and
# pg_expect.sh (and starts the cluster for postgres).  Sourced, not run.
#
# Orphans are planted as they arise in real life, by hand: pemba's
# WriteSchema refuses a schema that would orphan relationships, so the
# stored schema text is replaced with SQL (sqlite3 / psql) by one that no
# longer admits some of the rows.
# shellcheck shell=bash

# new_store NAME: a datastore URI of the engine (nothing created yet for
# SQLite; an empty database for PostgreSQL).
new_store() {
	if [[ $engine == postgres ]]; then
		pg_createdb "$1"
	else
		echo "sqlite://$work/$1.db"
	fi
}

# sql URI STATEMENT [VAR=VALUE]: runs one SQL statement on the datastore.
# VAR=VALUE binds :'VAR' (psql) / the only ? (sqlite3 via a parameter).
sql() {
	local uri=$1 statement=$2
	if [[ $engine == postgres ]]; then
		# Variables are interpolated in a script, not in -c.
		local vars=()
		[[ $# -gt 2 ]] && { vars=(-v "${3%%=*}=${3#*=}"); statement=${statement//\?/:\'${3%%=*}\'}; }
		echo "$statement" | psql -X -q -v ON_ERROR_STOP=1 "${vars[@]}" "$uri" -f - >/dev/null
	else
		local file=${uri#sqlite://}
		if [[ $# -gt 2 ]]; then
			# sqlite3 has no bind from the command line: a quoted literal.
			local value=${3#*=}
			statement=${statement//\?/\'${value//\'/\'\'}\'}
		fi
		sqlite3 "$file" "$statement"
	fi
}

# plant URI SCHEMA_FILE: replaces the stored schema text by hand.
plant() {
	sql "$1" "UPDATE schema_versions SET text = ? WHERE deleted_rev IS NULL" \
		"t=$(cat "$2")"
}

cat >"$work/seed.yaml" <<'EOF'
schema: |-
  use expiration

  definition user {}

  caveat has_level(level int, min int) {
    level >= min
  }

  definition group {
    relation member: user
  }

  definition doc {
    relation viewer: user | user with has_level | user:* | group#member
    relation editor: user | user with expiration
    relation old: user
    relation owner: user
    permission view = viewer + editor
  }

  definition folder {
    relation parent: doc
  }
relationships: |-
  doc:1#viewer@user:anne
  doc:1#viewer@user:bob[has_level:{"min":3}]
  doc:1#viewer@user:*
  doc:1#viewer@group:eng#member
  doc:1#editor@user:carl[expiration:2099-01-02T03:04:05Z]
  doc:2#old@user:dan
  doc:2#old@user:erin
  doc:3#owner@user:fay
  folder:f1#parent@doc:1
  group:eng#member@user:anne
EOF
# The schema above, as `schema write` takes it.
sed -n '/^schema: |-$/,/^relationships:/p' "$work/seed.yaml" | sed '1d;$d' |
	sed 's/^  //' >"$work/good.zed"
# The hand-edited schema: `old` and `folder` gone, `owner` a permission,
# viewer without user:* and without the caveat, editor without the
# expiration trait.
cat >"$work/broken.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
  level >= min
}

definition group {
  relation member: user
}

definition doc {
  relation viewer: user | group#member
  relation editor: user
  permission owner = viewer
  permission view = viewer + editor
}
EOF
cat >"$work/orphans.txt" <<'EOF'
doc:1#editor@user:carl[expiration:2099-01-02T03:04:05Z]
doc:1#viewer@user:*
doc:1#viewer@user:bob[has_level:{"min":3}]
doc:2#old@user:dan
doc:2#old@user:erin
doc:3#owner@user:fay
folder:f1#parent@doc:1
EOF

ds=$(new_store checked) || exit 1
run validate --datastore "$ds" "$work/seed.yaml"
check "seed the datastore (validate --datastore)" exit_is 0

# --- a clean datastore --------------------------------------------------
run datastore check --datastore "$ds"
check "clean: exit 0" exit_is 0
check "clean: orphans: 0" has_out "orphans: 0"
check "clean: 10 relationships checked" has_out "checked 10 relationships"
check "clean: nothing on stderr when it is not a terminal" test ! -s "$work/err"
if command -v script >/dev/null; then
	script -qec "'$PEMBA_BINARY' datastore check --datastore '$ds'" /dev/null >"$work/out" 2>&1
	check "on a terminal: progress on stderr" has_out "relationships checked"
fi
run datastore check --datastore "$ds" --json
check "clean, --json: exit 0" exit_is 0
check "clean, --json: \"orphans\":0" has_out '"checked":10,"orphans":0'

# --- usage and errors ---------------------------------------------------
run datastore check --help
check "--help: exit 0 and the usage" eval '((status == 0)) && has_out "usage: pemba datastore check"'
run datastore check --datastore "$ds" --bogus
check "unknown option: exit 2 with the usage" eval '((status == 2)) && has_err "unknown option" && has_err "usage: pemba datastore check"'
run datastore check --datastore "$ds" --show x
check "--show x: exit 2" eval '((status == 2)) && has_err "--show needs a number"'
run datastore check --datastore "bogus://x"
check "unknown URI scheme: exit 2 naming it" eval '((status == 2)) && has_err "unsupported datastore URI"'
if [[ $engine == postgres ]]; then
	run datastore check --datastore "$(pg_uri no_such_db)"
	check "missing database: exit 2" eval '((status == 2)) && has_err "no_such_db"'
	unmigrated=$(new_store unmigrated) || exit 1
else
	run datastore check --datastore "sqlite://$work/missing.db"
	check "missing SQLite file: exit 2, not created" eval '((status == 2)) && has_err "cannot open" && [[ ! -e $work/missing.db ]]'
	unmigrated=$(new_store unmigrated)
fi
run datastore migrate up --to 1 --yes --datastore "$unmigrated"
run datastore check --datastore "$unmigrated"
check "datastore below the newest layout: exit 2 naming the migration command" \
	eval '((status == 2)) && has_err "migrate"'

# --- planted orphans ----------------------------------------------------
plant "$ds" "$work/broken.zed" || { fail "plant the broken schema" "sql failed"; }
run datastore check --datastore "$ds"
check "orphans: exit 1" exit_is 1
check "orphans: 7 of 10" eval 'has_out "checked 10 relationships" && has_out "orphans: 7"'
for line in "unknown_resource_type      1" "unknown_relation           2" \
	"relation_is_permission     1" "subject_not_allowed        1" \
	"caveat_not_allowed         1" "expiration_not_allowed     1" \
	"doc#viewer                 2" "doc#editor                 1" \
	"doc#old                    2" "doc#owner                  1" \
	"folder#parent              1"; do
	check "orphans: counted: $line" has_out "  $line"
done
for line in "doc:1#viewer@user:*  subject_not_allowed" \
	'doc:1#viewer@user:bob[has_level:{"min":3}]  caveat_not_allowed' \
	"doc:1#editor@user:carl[expiration:2099-01-02T03:04:05Z]  expiration_not_allowed" \
	"doc:2#old@user:dan  unknown_relation" "doc:3#owner@user:fay  relation_is_permission" \
	"folder:f1#parent@doc:1  unknown_resource_type"; do
	check "orphans: listed: $line" has_out "  $line"
done
check "orphans: the clean rows are not listed" eval '! has_out "user:anne  "'
run datastore check --datastore "$ds" --show 2
check "--show 2: the first 2" eval '((status == 1)) && has_out "orphans (first 2):" && ! has_out "doc:2#old@user:dan  "'
run datastore check --datastore "$ds" --json
check "--json: one valid JSON object" python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$work/out"
check "--json: exit 1 with counts per kind and relation" eval '((status == 1)) &&
	has_out "\"orphans\":7" && has_out "\"unknown_relation\":2" && has_out "\"doc#old\":2" &&
	has_out "\"expiration_not_allowed\":1" && has_out "\"folder#parent\":1"'

# --- --fix refusals: nothing changes ------------------------------------
: >"$work/exists.txt"
run datastore check --datastore "$ds" --fix "$work/exists.txt"
check "--fix onto an existing FILE: exit 2, refused" eval '((status == 2)) && has_err "exists"'
check "--fix onto an existing FILE: FILE untouched" test ! -s "$work/exists.txt"
sql "$ds" "UPDATE settings SET value = 1 WHERE key = 'read_only'"
run datastore check --datastore "$ds" --fix "$work/ro.txt"
check "--fix on a read-only datastore: exit 2, refused, no FILE" \
	eval '((status == 2)) && has_err "read-only" && [[ ! -e $work/ro.txt ]]'
sql "$ds" "UPDATE settings SET value = 0 WHERE key = 'read_only'"
if [[ $engine == sqlite ]]; then
	run datastore check --datastore "$ds?mode=ro" --fix "$work/ro.txt"
	check "--fix on a mode=ro handle: exit 2, refused, no FILE" \
		eval '((status == 2)) && has_err "mode=ro" && [[ ! -e $work/ro.txt ]]'
	run datastore check --datastore "$ds?mode=ro"
	check "check on a mode=ro handle: works (exit 1)" eval '((status == 1)) && has_out "orphans: 7"'
fi
run datastore check --datastore "$ds"
check "after the refusals: still 7 orphans of 10" eval '((status == 1)) && has_out "checked 10 relationships" && has_out "orphans: 7"'

# --- --fix while a server serves the datastore ---------------------------
pg_serve srv "$ds"
conn=(--insecure --endpoint "127.0.0.1:$serve_port")
"$PEMBA_BINARY" relationship export "${conn[@]}" 2>/dev/null | sort >"$work/before.txt"
run datastore check --datastore "$ds" --fix "$work/moved.txt"
check "--fix: exit 0, says what it moved" eval '((status == 0)) && has_out "moved 7 relationships to $work/moved.txt" && has_out "moved (7):"'
grep -v '^#' "$work/moved.txt" | sort >"$work/moved.sorted"
check "--fix: FILE holds exactly the orphans" cmp -s "$work/moved.sorted" "$work/orphans.txt"
"$PEMBA_BINARY" relationship export "${conn[@]}" 2>/dev/null | sort >"$work/after.txt"
check "--fix: exactly the orphans were deleted (the server sees it)" \
	eval 'comm -23 "$work/before.txt" "$work/after.txt" | cmp -s - "$work/orphans.txt" && [[ $(wc -l <"$work/after.txt") -eq 3 ]]'
run datastore check --datastore "$ds"
check "--fix: a rerun is clean" eval '((status == 0)) && has_out "orphans: 0" && has_out "checked 3 relationships"'
run datastore check --datastore "$ds" --fix "$work/moved2.txt"
check "--fix again: nothing to move, no FILE" eval '((status == 0)) && has_out "orphans: 0" && [[ ! -e $work/moved2.txt ]]'
check "--fix: no temporary file left behind" eval '! compgen -G "$work/*.tmp-*" >/dev/null'

# --- the file re-imports once the schema accepts it ---------------------
run schema write "${conn[@]}" "$work/good.zed"
check "schema fixed (schema write of the original)" exit_is 0
run relationship import "${conn[@]}" "$work/moved.txt"
check "relationship import FILE: 7 imported" eval '((status == 0)) && has_out "imported 7 relationships"'
"$PEMBA_BINARY" relationship export "${conn[@]}" 2>/dev/null | sort >"$work/reimported.txt"
check "re-imported: the datastore holds what it held before, caveats and expirations included" \
	cmp -s "$work/before.txt" "$work/reimported.txt"
run datastore check --datastore "$ds"
check "re-imported: clean" eval '((status == 0)) && has_out "checked 10 relationships" && has_out "orphans: 0"'

# --- --fix while a client writes through the server ----------------------
plant "$ds" "$work/broken.zed" || fail "plant the broken schema again" "sql failed"
(
	for i in $(seq 1 40); do
		"$PEMBA_BINARY" relationship touch "${conn[@]}" "doc:w$i#viewer@user:w$i" >/dev/null 2>&1 || exit 1
	done
) &
writer=$!
run datastore check --datastore "$ds" --fix "$work/moved3.txt"
fix_status=$status
wait "$writer"
writer_status=$?
check "--fix during writes: exit 0, the 7 orphans moved" eval '((fix_status == 0)) && has_out "moved 7 relationships"'
check "--fix during writes: every write succeeded" test "$writer_status" = 0
"$PEMBA_BINARY" relationship export "${conn[@]}" 2>/dev/null | sort >"$work/final.txt"
check "--fix during writes: the 40 written relationships and the 3 valid ones remain" \
	eval '[[ $(grep -c "^doc:w" "$work/final.txt") -eq 40 && $(wc -l <"$work/final.txt") -eq 43 ]]'
run datastore check --datastore "$ds"
check "--fix during writes: clean afterwards" eval '((status == 0)) && has_out "orphans: 0"'
pg_stop_pid "$serve_pid"

echo "$passed passed, $failed failed"
((failed == 0))
