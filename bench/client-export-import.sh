#!/usr/bin/env bash
# Per-client export and import on the sample firm (issue targets: on a 1 GiB
# firm with 50 clients, exporting one client under 2 s, importing it under 5 s).
#
#   bash bench/client-export-import.sh               # 1 GiB firm, 50 clients
#   SIZE=268435456 bash bench/client-export-import.sh
#
# 1. makes the sample firm and takes a nightly backup of it;
# 2. `client backup` of one client (CLIENT, default 7): the export inside one
#    read transaction, then storing the archive; wall time and export time;
# 3. damages that client's books and runs `client restore --replace` from the
#    archive: wall time, the import's own time (transaction, remapping,
#    verification, commit), and the safety snapshot's time;
# 4. checks the books balance afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1073741824}
CLIENT=${CLIENT:-7}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

source bench/lib.sh
need /usr/bin/time time
need sqlite3 sqlite3

cargo build --release -q -p ledgervault-cli
cargo build --release -q -p ledgervault-samplefirm --example firm
LV=$PWD/target/release/ledgervault
FIRM=$PWD/target/release/examples/firm

"$FIRM" generate "$WORK/firm.db" "$SIZE" 2>"$WORK/gen.txt"
export LEDGERVAULT_PASSWORD=bench LEDGERVAULT_REPOSITORY="$WORK/repo"
"$LV" init -q
"$LV" backup -q "$WORK/firm.db"

sync
# The listing the console's Clients page shows: every client's row counts.
/usr/bin/time -f "%e %M" -o "$WORK/t.list" "$LV" client list "$WORK/firm.db" >/dev/null
/usr/bin/time -f "%e %M" -o "$WORK/t.export" "$LV" --json client backup "$WORK/firm.db" --client "$CLIENT" >"$WORK/export.json"
rows=$(python3 -c "import json;print(json.load(open('$WORK/export.json'))['rows'])")
export_secs=$(python3 -c "import json;print(round(json.load(open('$WORK/export.json'))['export_secs'],2))")
archive=$(python3 -c "import json;print(json.load(open('$WORK/export.json'))['snapshot_id'])")

sqlite3 "$WORK/firm.db" "UPDATE customers SET name = 'WRONG' WHERE client_id = $CLIENT;"
# The sample firm has intercompany entries; into the same firm they can stay.
printf '[client.links]\n"journal_entries.intercompany_entry_id" = "keep"\n' >"$WORK/lv.toml"
sync
/usr/bin/time -f "%e %M" -o "$WORK/t.import" "$LV" --config "$WORK/lv.toml" --json client restore "$archive" --client "$CLIENT" --into "$WORK/firm.db" --replace >"$WORK/import.json"
import_secs=$(python3 -c "import json;print(round(json.load(open('$WORK/import.json'))['import_secs'],2))")
committed=$(python3 -c "import json;print(json.load(open('$WORK/import.json'))['committed'])")
timings=$(python3 -c "import json;print(', '.join(f'{s} {t:.1f}' for s,t in json.load(open('$WORK/import.json'))['timings']))")
# The same client added again as a new one: every key remapped, no replace.
/usr/bin/time -f "%e %M" -o "$WORK/t.asnew" "$LV" --config "$WORK/lv.toml" --json client restore "$archive" --client "$CLIENT" --into "$WORK/firm.db" --as-new --set code=COPY >"$WORK/asnew.json"
asnew_secs=$(python3 -c "import json;print(round(json.load(open('$WORK/asnew.json'))['import_secs'],2))")
asnew_timings=$(python3 -c "import json;print(', '.join(f'{s} {t:.1f}' for s,t in json.load(open('$WORK/asnew.json'))['timings']))")
wrong=$(sqlite3 "$WORK/firm.db" "SELECT count(*) FROM customers WHERE name = 'WRONG';")
unbalanced=$(sqlite3 "$WORK/firm.db" "SELECT count(*) FROM (SELECT e.client_id FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id GROUP BY e.client_id HAVING sum(l.debit_cents) != sum(l.credit_cents));")

echo
echo "sample firm: $(cat "$WORK/gen.txt")"
echo "client $CLIENT: $rows rows; $(nproc) cores; committed=$committed; damaged rows left=$wrong; unbalanced clients=$unbalanced"
printf '%-46s %10s %10s\n' "" "seconds" "peak RSS"
printf '%-46s %10s %10s\n' "client list (every client's rows)" "$(cut -d' ' -f1 "$WORK/t.list")" "$(mib "$(cut -d' ' -f2 "$WORK/t.list")")"
printf '%-46s %10s %10s\n' "client backup (wall, incl. storing)" "$(cut -d' ' -f1 "$WORK/t.export")" "$(mib "$(cut -d' ' -f2 "$WORK/t.export")")"
printf '%-46s %10s\n' "  of which the export (one read transaction)" "$export_secs"
printf '%-46s %10s %10s\n' "client restore --replace (wall)" "$(cut -d' ' -f1 "$WORK/t.import")" "$(mib "$(cut -d' ' -f2 "$WORK/t.import")")"
printf '%-46s %10s\n' "  of which the import (transaction to commit)" "$import_secs"
printf '%-46s %10s %10s\n' "client restore --as-new (wall)" "$(cut -d' ' -f1 "$WORK/t.asnew")" "$(mib "$(cut -d' ' -f2 "$WORK/t.asnew")")"
printf '%-46s %10s\n' "  of which the import (transaction to commit)" "$asnew_secs"
echo "replace steps (s): $timings"
echo "as-new steps (s):  $asnew_timings"
echo "The wall times include a safety snapshot of the 1 GiB target taken before each import."
