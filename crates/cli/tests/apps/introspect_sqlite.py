#!/usr/bin/env python3
"""Print the schema facts of a SQLite database that matter for restoring one
client: per table the primary key, foreign keys (with NOT NULL or nullable),
unique indexes, and row count; then self-references and FK cycles.

    python3 introspect_sqlite.py /path/db.sqlite [ROOT_TABLE]

With ROOT_TABLE it also prints, for every table, the FK paths that lead to it.
Uses only PRAGMA table_info / foreign_key_list / index_list / index_info.
"""
import sqlite3
import sys


def main(path, root=None):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    fks = {}
    for t in tables:
        cols = {r[1]: r for r in con.execute(f'PRAGMA table_info("{t}")')}
        pk = [r[1] for r in sorted(cols.values(), key=lambda r: r[5]) if r[5]]
        pktypes = [cols[c][2] for c in pk]
        n = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        print(f"{t}  rows={n}  pk=({', '.join(pk)}) {pktypes}")
        groups = {}
        for r in con.execute(f'PRAGMA foreign_key_list("{t}")'):
            groups.setdefault(r[0], []).append(r)
        fks[t] = []
        for g in groups.values():
            src = [r[3] for r in g]
            dst = [r[4] for r in g]
            nullable = any(cols[c][3] == 0 and not cols[c][5] for c in src)
            fks[t].append((src, g[0][2], dst, nullable))
            print(f"   FK ({', '.join(src)}) -> {g[0][2]}({', '.join(str(x) for x in dst)})"
                  f"  {'NULLABLE' if nullable else 'NOT NULL'}  on_delete={g[0][6]}")
        for r in con.execute(f'PRAGMA index_list("{t}")'):
            if r[2]:
                icols = [x[2] for x in con.execute(f'PRAGMA index_info("{r[1]}")')]
                print(f"   UNIQUE {r[1]} ({', '.join(map(str, icols))}) origin={r[3]}")
    print("\nself-references:")
    for t, lst in fks.items():
        for src, dst, _, nullable in lst:
            if dst == t:
                print(f"   {t}.{src} -> {t} ({'nullable' if nullable else 'NOT NULL'})")
    # cycles between distinct tables (simple DFS)
    graph = {t: sorted({d for _, d, _, _ in lst if d != t}) for t, lst in fks.items()}
    cycles = set()

    def dfs(start, node, path):
        for nxt in graph.get(node, []):
            if nxt == start:
                cyc = path[:]
                i = cyc.index(min(cyc))
                cycles.add(tuple(cyc[i:] + cyc[:i]))
            elif nxt not in path and nxt > start:
                dfs(start, nxt, path + [nxt])

    for t in tables:
        dfs(t, t, [t])
    print("cycles between tables:")
    for c in sorted(cycles, key=len):
        print("   " + " -> ".join(c + (c[0],)))
    if root:
        print(f"\nFK paths to {root} (shortest first, max 4 hops):")
        for t in tables:
            paths = []

            def walk(node, path, cols):
                if len(path) > 5:
                    return
                for src, dst, _, nullable in fks.get(node, []):
                    step = f"{node}.{'+'.join(src)}{'?' if nullable else ''}"
                    if dst == root:
                        paths.append(" -> ".join(cols + [step]) + f" -> {root}")
                    elif dst not in path:
                        walk(dst, path + [dst], cols + [step])

            walk(t, [t], [])
            paths.sort(key=lambda p: p.count("->"))
            print(f"   {t}: {len(paths)} path(s)")
            for p in paths[:6]:
                print(f"      {p}")


if __name__ == "__main__":
    main(*sys.argv[1:])
