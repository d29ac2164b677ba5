#!/usr/bin/env python3
"""Check the call graph between the files of the format library.

Reads the symbols of every member of an archive (libvhdx.a) with nm: an
edge a -> b where a.o uses (U) a symbol b.o defines.  Prints, as TAP, one
test: no cycle among the files except the allowed ones (open <-> parent,
the open of a differencing image opening its parent).  The files are
listed bottom-up by layer as comments.

usage: layers.py ARCHIVE [NM]
"""
import collections
import subprocess
import sys

ALLOWED = [{"open", "parent"}]


def symbols(archive, nm):
    out = subprocess.run([nm, archive], capture_output=True, text=True,
                         check=True).stdout
    defs, uses, member = {}, collections.defaultdict(set), None
    for line in out.splitlines():
        if line.endswith(".o:"):
            member = line[:-3]
            # the PIC build prefixes its objects (libvhdx_pic_a-bat.o)
            member = member.split("-", 1)[-1]
            uses.setdefault(member, set())
            continue
        p = line.split()
        if len(p) == 3 and p[1] in "TDBRC":
            defs[p[2]] = member
        elif len(p) == 2 and p[0] == "U":
            uses[member].add(p[1])
    return defs, uses


def sccs(nodes, graph):
    """Tarjan's strongly connected components, in reverse topological
    order (a component comes after every component it reaches)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    archive = sys.argv[1]
    nm = sys.argv[2] if len(sys.argv) > 2 else "nm"
    defs, uses = symbols(archive, nm)
    graph, why = collections.defaultdict(set), collections.defaultdict(set)
    for f, used in uses.items():
        for s in used:
            t = defs.get(s)
            if t and t != f:
                graph[f].add(t)
                why[(f, t)].add(s)
    comps = sccs(uses.keys(), graph)
    print("1..1")
    bad = [c for c in comps if len(c) > 1 and c not in ALLOWED]
    # layer of a component: 0 if it calls no other, else 1 + the highest
    # layer it calls
    layer, of = {}, {}
    for i, c in enumerate(comps):
        for f in c:
            of[f] = i
    for i, c in enumerate(comps):
        below = {of[t] for f in c for t in graph[f]} - {i}
        layer[i] = 1 + max((layer[j] for j in below), default=-1)
    for n in range(max(layer.values(), default=-1) + 1):
        names = sorted(" <-> ".join(sorted(comps[i])) for i in layer
                       if layer[i] == n)
        print("# layer %d: %s" % (n, ", ".join(names)))
    for c in bad:
        print("# cycle: %s" % " <-> ".join(sorted(c)))
        for f in sorted(c):
            for t in sorted(graph[f] & c):
                print("#   %s -> %s (%s)" % (f, t,
                                             ", ".join(sorted(why[(f, t)]))))
    if bad:
        print("not ok 1 - %d cycle(s) among the library's files beyond "
              "open <-> parent" % len(bad))
        return 1
    print("ok 1 - no cycle among the %d files of the library but "
          "open <-> parent" % len(uses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
