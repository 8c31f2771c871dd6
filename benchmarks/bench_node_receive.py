"""Receive throughput of the DICOM node against dcmtk's own storescp.

Note: Debian's dcmtk 3.6.7 leaves Nagle on unless ``TCP_NODELAY=1`` is set in
the environment, so with its defaults storescp itself stalls on every
instance. Both the default and the ``TCP_NODELAY=1`` case are measured.

Sends the same instances with dcmtk ``storescu`` (8 KB and 512 KB pixel
payloads; one association, and four in parallel) to (a) dcmtk ``storescp``
writing to disk and (b) the node's SCP (``python -m app.node serve``; spool
with fsync, study processing disabled by a long quiet period), and reports
instances/s as medians over repeats and the node/storescp ratio. With
``--no-quickack`` rows, it also shows the ~40 ms per-instance stall the node
avoids with TCP_QUICKACK.

storescp cannot be bound to one address, so the benchmark re-runs itself in a
private network namespace (``unshare -n``; ``-rn`` when not root) where only
loopback exists; ``--no-netns`` runs it in place.

    python -m benchmarks.bench_node_receive [--small 1000] [--large 100] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.node_helpers import NodeProcess, dcmtk_storescp, dcmtk_tool, free_port, wait_until, write_study

_NETNS_FLAG = "TSC_BENCH_IN_NETNS"


def _reexec_in_netns(argv: list[str]) -> int | None:
    if os.environ.get(_NETNS_FLAG) or "--no-netns" in argv or not shutil.which("unshare"):
        return None
    inner = f"ip link set lo up && exec {sys.executable} -m benchmarks.bench_node_receive " + \
        " ".join(f"'{a}'" for a in argv)
    env = dict(os.environ, **{_NETNS_FLAG: "1"})
    for flags in (["-n"], ["-rn"]):
        probe = subprocess.run(["unshare", *flags, "true"], capture_output=True)
        if probe.returncode == 0:
            return subprocess.call(["unshare", *flags, "sh", "-c", inner], env=env)
    print("warning: cannot create a network namespace; running on the host loopback", file=sys.stderr)
    return None


def _send(port: int, folders: list[Path], called: str, nodelay: bool) -> float:
    tool = dcmtk_tool("storescu")
    assert tool
    env = dict(os.environ, TCP_NODELAY="1" if nodelay else "0")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([tool, "-aet", "STORESCU", "-aec", called, "+sd", "+r",
                               "127.0.0.1", str(port), str(f)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for f in folders]
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - t0


def _count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix in (".dcm", "")
               and not p.name.endswith(".part"))


def run(small: int, large: int, repeats: int, work: Path) -> list[dict]:
    loads = {"8KB": (small, 8 * 1024), "512KB": (large, 512 * 1024)}
    data: dict[str, dict[int, list[Path]]] = {}
    for name, (n, size) in loads.items():
        data[name] = {}
        for assocs in (1, 4):
            folders = []
            for i in range(assocs):
                folder = work / "data" / f"{name}_{assocs}_{i}"
                write_study(folder, n // assocs, payload_bytes=size)
                folders.append(folder)
            data[name][assocs] = folders
    rows = []
    for name, (n, _) in loads.items():
        for assocs in (1, 4):
            folders = data[name][assocs]
            total = sum(len(list(f.iterdir())) for f in folders)
            result: dict[str, list[float]] = {k: [] for k in (
                "storescp", "node", "storescp_nodelay", "node_nodelay", "node_nodelay_nofsync",
                "node_no_quickack")}
            for rep in range(repeats):
                for nodelay in (False, True):
                    suffix = "_nodelay" if nodelay else ""
                    port = free_port()
                    out = work / f"scp_{name}_{assocs}_{rep}"
                    with dcmtk_storescp(out, port, aet="TSCNODE", nodelay=nodelay):
                        dt = _send(port, folders, "TSCNODE", nodelay)
                    result["storescp" + suffix].append(total / dt)
                    shutil.rmtree(out, ignore_errors=True)
                    variants = [("node" + suffix, True, True)]
                    if nodelay:
                        variants.append(("node_nodelay_nofsync", True, False))
                    elif name == "8KB":
                        variants.append(("node_no_quickack", False, True))
                    for variant, quickack, fsync in variants:
                        nw = work / f"node_{name}_{assocs}_{rep}_{variant}"
                        node = NodeProcess(nw, quiet_period_s=1e6,
                                           extra={"scp": {"quickack": quickack,
                                                          "allowed_calling_aes": ["*"]},
                                                  "spool": {"fsync": fsync},
                                                  "logging": {"level": "INFO"}})
                        node.start()
                        # let the worker process finish loading before timing
                        wait_until(lambda: "worker_ready" in node.log_text(), 120)
                        try:
                            dt = _send(node.port, folders, "TSCNODE", nodelay)
                        finally:
                            node.stop()
                        stored = _count(nw / "spool" / "incoming")
                        if stored != total:
                            raise RuntimeError(f"node stored {stored} of {total} instances")
                        result[variant].append(total / dt)
                        shutil.rmtree(nw, ignore_errors=True)
            row = {"payload": name, "associations": assocs, "instances": total}
            for k, v in result.items():
                if v:
                    row[f"{k}_per_s"] = round(statistics.median(v), 1)
            row["ratio_node_vs_storescp"] = round(row["node_per_s"] / row["storescp_per_s"], 3)
            row["ratio_nodelay"] = round(row["node_nodelay_per_s"] / row["storescp_nodelay_per_s"], 3)
            row["ratio_nodelay_nofsync"] = round(row["node_nodelay_nofsync_per_s"]
                                                 / row["storescp_nodelay_per_s"], 3)
            if "node_no_quickack_per_s" in row:
                row["ratio_quickack_gain"] = round(row["node_per_s"] / row["node_no_quickack_per_s"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = _reexec_in_netns(argv)
    if code is not None:
        return code
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000, help="number of 8 KB instances per run")
    ap.add_argument("--large", type=int, default=100, help="number of 512 KB instances per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--no-netns", action="store_true", help="do not use a private network namespace")
    args = ap.parse_args(argv)
    if not dcmtk_tool("storescu") or not dcmtk_tool("storescp"):
        print("dcmtk storescu/storescp not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        rows = run(args.small, args.large, args.repeats, Path(tmp))
    print()
    print("instances/s, medians; 'nodelay' = storescu (and storescp) run with TCP_NODELAY=1;")
    print("node = fsync of file and folder per instance (default); nofsync = spool.fsync false (like storescp)")
    print(f"{'payload':>8} {'assoc':>5} {'n':>6} | {'storescp':>9} {'node':>8} {'ratio':>6} | "
          f"{'storescp':>9} {'node':>8} {'ratio':>6} {'nofsync':>8} {'ratio':>6} | {'node w/o quickack':>17}")
    print(f"{'':>22} | {'default storescu':^25} | {'nodelay':^41} |")
    for r in rows:
        print(f"{r['payload']:>8} {r['associations']:>5} {r['instances']:>6} | {r['storescp_per_s']:>9} "
              f"{r['node_per_s']:>8} {r['ratio_node_vs_storescp']:>6} | {r['storescp_nodelay_per_s']:>9} "
              f"{r['node_nodelay_per_s']:>8} {r['ratio_nodelay']:>6} {r['node_nodelay_nofsync_per_s']:>8} "
              f"{r['ratio_nodelay_nofsync']:>6} | {r.get('node_no_quickack_per_s', '-'):>17}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
