"""Hostile peers against the DICOM node on loopback, with the node's peak RSS measured.

The probe of issue 15: while a legitimate ``storescu`` sends a study, one host opens
``--connections`` sockets (half declare a huge A-ASSOCIATE-RQ PDU with a 6-byte
header and then stall, half send nothing) and another association sends a deflate
bomb (``--bomb-mib`` of zeros, a few MB on the wire). Then the attack stops and a
second ``storescu`` must succeed within 5 s. The node is ``python -m app.node serve``
in a subprocess; its peak RSS is ``VmHWM`` of its main process.

The attacker connects from a second loopback address (``127.0.0.2``: one misbehaving
host), the legitimate sender from ``127.0.0.1``; the node listens on ``127.0.0.1``.

Last, ``--garbage-kib`` of random bytes arrive over 20 connections and the log lines
they cause are counted.

``--code DIR`` runs the node from another checkout (``git archive <commit> app
operators tests | tar -x -C DIR``) to measure the code before a change; use
``--as-limit-gib`` then, so an unbounded node meets an address-space limit instead
of the machine's memory.

    python -m benchmarks.bench_node_attack [--connections 100] [--declared-mib 4096]
        [--bomb-mib 1536] [--code DIR] [--as-limit-gib 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from tests.node_helpers import NodeProcess, storescu, wait_until, write_study

DEFLATED = "1.2.840.10008.1.2.1.99"
MR = "1.2.840.10008.5.1.4.1.1.4"


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _elem(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def write_deflate_bomb(path: Path, inflated_mib: int) -> int:
    """A Part 10 MR file in Deflated Explicit VR LE whose dataset inflates to ``inflated_mib`` MiB.

    Returns the number of bytes on the wire (the deflated dataset).
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import generate_uid

    sop = generate_uid()
    head = b"".join([_elem(0x0008, 0x0016, b"UI", MR.encode()), _elem(0x0008, 0x0018, b"UI", sop.encode()),
                     _elem(0x0020, 0x000D, b"UI", generate_uid().encode()),
                     _elem(0x0020, 0x000E, b"UI", generate_uid().encode())])
    n = inflated_mib * 1024 * 1024
    pixel_header = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<L", n)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = DEFLATED
    meta.ImplementationClassUID = generate_uid()
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    wire = 0
    zeros = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(f, meta)
        for chunk in (head, pixel_header):
            out = comp.compress(chunk)
            wire += len(out)
            f.write(out)
        for _ in range(inflated_mib):
            out = comp.compress(zeros)
            wire += len(out)
            f.write(out)
        out = comp.flush()
        wire += len(out)
        f.write(out)
    return wire


def send_bomb(port: int, path: Path, result: dict[str, Any]) -> None:
    from pynetdicom import AE, _config
    from pynetdicom.presentation import build_context

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.requested_contexts = [build_context(MR, DEFLATED)]
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="TSCNODE", bind_address=("127.0.0.3", 0))
    if not assoc.is_established:
        result["bomb"] = "association failed"
        return
    status = assoc.send_c_store(path)
    result["bomb"] = hex(status.Status) if "Status" in status else "no status (connection closed)"
    result["bomb_s"] = round(time.monotonic() - t0, 2)
    if assoc.is_established:
        assoc.release()


def attack(port: int, connections: int, declared_mib: int, stop: threading.Event,
           result: dict[str, Any]) -> None:
    """Open the hostile connections from 127.0.0.2 and hold them until ``stop`` is set."""
    socks: list[socket.socket] = []
    opened = 0
    for i in range(connections):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            if i % 2 == 0:  # A-ASSOCIATE-RQ type, declared length, then nothing
                s.sendall(struct.pack(">BBL", 0x01, 0, min(declared_mib * 1024 * 1024, 0xFFFFFFFF)))
            opened += 1
            socks.append(s)
        except OSError:
            s.close()
    result["attack_connections_opened"] = opened
    stop.wait()
    for s in socks:
        s.close()


def send_garbage(port: int, kib: int, connections: int = 20) -> None:
    """``kib`` KiB of random bytes over ``connections`` sockets (what a broken peer or a scanner sends)."""
    rng = random.Random(15)
    per = kib * 1024 // connections
    for _ in range(connections):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(bytes(rng.getrandbits(8) for _ in range(per)))
            time.sleep(0.05)
        except OSError:
            pass
        finally:
            s.close()


def legit_send(port: int, study: Path) -> tuple[bool, float, str]:
    t0 = time.monotonic()
    proc = storescu(port, study, timeout_s=60)
    return proc.returncode == 0, round(time.monotonic() - t0, 2), proc.stderr[-300:]


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-node-attack-"))
    prefix = ["prlimit", f"--as={int(args.as_limit_gib * 1024 ** 3)}", "--"] if args.as_limit_gib else []
    node = NodeProcess(work / "node", quiet_period_s=3600,
                       extra={"scp": {"allowed_hosts": ["127.0.0.0/8"], "max_associations": 64}},
                       command_prefix=prefix,
                       code_dir=Path(args.code).resolve() if args.code else None)
    node.start()
    pid = node.proc.pid
    _, _ = write_study(work / "legit1", 5)
    _, _ = write_study(work / "legit2", 5)
    bomb = work / "bomb.dcm"
    wire = write_deflate_bomb(bomb, args.bomb_mib)
    result: dict[str, Any] = {"code": args.code or "this checkout", "connections": args.connections,
                              "declared_mib": args.declared_mib, "bomb_inflated_mib": args.bomb_mib,
                              "bomb_wire_kib": round(wire / 1024, 1),
                              "rss_before_mib": round(peak_rss_mib(pid), 1)}
    stop = threading.Event()
    attacker = threading.Thread(target=attack, args=(node.port, args.connections, args.declared_mib,
                                                     stop, result), daemon=True)
    attacker.start()
    bomber = threading.Thread(target=send_bomb, args=(node.port, bomb, result), daemon=True)
    time.sleep(1.0)
    bomber.start()
    ok, secs, err = legit_send(node.port, work / "legit1")
    result.update(legit_during_ok=ok, legit_during_s=secs)
    if not ok:
        result["legit_during_error"] = err
    bomber.join(120)
    time.sleep(args.hold_s)
    alive = node.proc.poll() is None
    result["node_alive_after_attack"] = alive
    stop.set()
    attacker.join(30)
    t_end = time.monotonic()
    ok2, secs2, err2 = legit_send(node.port, work / "legit2") if alive else (False, 0.0, "node died")
    result.update(legit_after_ok=ok2, legit_after_s=secs2,
                  legit_after_done_within_s=round(time.monotonic() - t_end, 2))
    if not ok2:
        result["legit_after_error"] = err2
    result["peak_rss_mib"] = round(peak_rss_mib(pid), 1) if alive else None
    if alive and args.garbage_kib:
        before = node.log_text()
        send_garbage(node.port, args.garbage_kib)
        time.sleep(3)
        added = node.log_text()[len(before):]
        result.update(garbage_kib=args.garbage_kib, garbage_log_lines=added.count("\n"),
                      garbage_log_bytes=len(added), garbage_error_lines=added.count('"level": "ERROR"'))
    log = node.log_text()
    result["log_lines"] = log.count("\n")
    result["log_bytes"] = len(log)
    result["memory_errors_in_log"] = log.count("MemoryError")
    received = len(list((node.spool / "incoming").rglob("*.dcm")))
    result["legit_instances_spooled"] = received
    node.stop()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--declared-mib", type=int, default=4096)
    p.add_argument("--bomb-mib", type=int, default=1536)
    p.add_argument("--hold-s", type=float, default=5.0, help="keep the attack open this long after the bomb")
    p.add_argument("--garbage-kib", type=int, default=60, help="then this much random data; log lines counted")
    p.add_argument("--code", help="run the node from this checkout instead")
    p.add_argument("--as-limit-gib", type=float, default=0.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
