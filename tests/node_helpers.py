"""Helpers shared by the DICOM node tests and benchmark: instance factory, peers, node process."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def dcmtk_tool(name: str) -> str | None:
    """Path of a dcmtk command-line tool (pynetdicom installs look-alike names in the venv)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            try:
                out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                                     timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if "dcmtk" in out.lower():
                return str(path)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.2) -> Any:
    """Poll ``predicate`` until truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def make_instance(study_uid: str, series_uid: str, *, payload_bytes: int = 8192,
                  instance_number: int = 1, description: str = "MRI BRAIN",
                  sop_uid: str | None = None, seed: int = 0) -> Dataset:
    """A small synthetic MR image with a square 16-bit pixel matrix of about ``payload_bytes``."""
    side = max(8, int((payload_bytes // 2) ** 0.5))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = study_uid + ".1" if len(study_uid) < 62 else generate_uid()
    ds.PatientName, ds.PatientID = "Test^Node", "NODE0001"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "20220101", "F", "004Y"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "ACC1"
    ds.StudyID, ds.ReferringPhysicianName = "1", ""
    ds.StudyDescription = description
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, instance_number
    ds.Manufacturer = "node-test"
    ds.ImagePositionPatient = [0.0, 0.0, 6.0 * instance_number]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 5.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, size=(side, side), dtype=np.uint16).tobytes()
    return ds


def dataset_body(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file (what travels in a C-STORE), without preamble and meta."""
    from pydicom import dcmread
    meta_len = int(dcmread(path, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength)
    return path.read_bytes()[132 + 12 + meta_len:]


def write_study(folder: Path, n: int, *, payload_bytes: int = 8192, description: str = "MRI BRAIN",
                study_uid: str | None = None) -> tuple[str, list[Path]]:
    """Write ``n`` instances of one new study (one series) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    paths = []
    for i in range(n):
        ds = make_instance(study_uid, series_uid, payload_bytes=payload_bytes, instance_number=i + 1,
                           description=description, seed=i)
        p = folder / f"{i:05d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return study_uid, paths


def storescu(port: int, paths: list[Path] | Path, *, called: str = "TSCNODE", calling: str = "STORESCU",
             timeout_s: float = 120, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """Send files/folders with dcmtk's storescu to 127.0.0.1:port."""
    tool = dcmtk_tool("storescu")
    assert tool, "dcmtk storescu not found"
    items = [str(p) for p in (paths if isinstance(paths, list) else [paths])]
    cmd = [tool, "-aet", calling, "-aec", called, "+sd", "+r", "-nh", *(extra or []),
           "127.0.0.1", str(port), *items]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


class NodeProcess:
    """The node run as ``python -m app.node serve --config FILE`` in a subprocess."""

    def __init__(self, workdir: Path, *, port: int | None = None, destinations: list[str] | None = None,
                 processor: str = "tests.node_doubles:make_result_writer",
                 options: dict[str, Any] | None = None, quiet_period_s: float = 1.0,
                 extra: dict[str, dict[str, Any]] | None = None, env: dict[str, str] | None = None,
                 command_prefix: list[str] | None = None, code_dir: Path | None = None) -> None:
        self.command_prefix = list(command_prefix or [])
        self.code_dir = Path(code_dir or REPO)
        self.workdir = workdir
        self.port = port or free_port()
        self.spool = workdir / "spool"
        self.config_path = workdir / "node.yaml"
        self.log_path = workdir / "node.log"
        cfg: dict[str, Any] = {
            "scp": {"ae_title": "TSCNODE", "host": "127.0.0.1", "port": self.port,
                    "allowed_calling_aes": ["STORESCU", "ORTHANC"], "allowed_hosts": ["127.0.0.1"]},
            "spool": {"dir": str(self.spool), "min_free_mb": 100},
            "study": {"quiet_period_s": quiet_period_s, "interrupted_quiet_period_s": quiet_period_s,
                      "poll_interval_s": 0.2},
            "worker": {"processor": processor, "options": options or {}, "study_timeout_s": 60,
                       "startup_timeout_s": 120},
            "outbox": {"destinations": destinations or [], "retry_initial_s": 0.5, "retry_max_s": 2,
                       "poll_interval_s": 0.2},
            "logging": {"format": "json", "level": "INFO"},
        }
        for section, values in (extra or {}).items():
            cfg.setdefault(section, {}).update(values)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.env = {**os.environ, "PYTHONPATH": str(self.code_dir), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "NodeProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.command_prefix, sys.executable, "-m", "app.node", "serve", "--config",
                                      str(self.config_path)], cwd=self.code_dir, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            wait_until(self._listening, 60)
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the node and its worker processes (its whole session)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        code = self.proc.returncode
        # worker processes run in their own process groups; make sure none is left
        self.proc = None
        return code


@contextmanager
def dcmtk_storescp(folder: Path, port: int, aet: str = "PACS",
                   nodelay: bool = False) -> Iterator[subprocess.Popen]:
    """dcmtk storescp as a destination PACS on 127.0.0.1 (stopped on exit)."""
    tool = dcmtk_tool("storescp")
    assert tool, "dcmtk storescp not found"
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([tool, "-aet", aet, "--output-directory", str(folder), "+B",
                             "--socket-timeout", "30", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TCP_NODELAY="1" if nodelay else "0"))
    try:
        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(up, 20, 0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class PacsPeer:
    """A destination PACS for tests: a pynetdicom Storage SCP on 127.0.0.1 writing what it gets.

    Stop it and start it again on the same port to simulate a PACS outage.
    """

    def __init__(self, folder: Path, port: int | None = None, aet: str = "PACS") -> None:
        self.folder = folder
        self.port = port or free_port()
        self.aet = aet
        self.server: Any = None
        self.received: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.save_as(self.folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        self.received.append(str(ds.SOPInstanceUID))
        return 0x0000

    def start(self) -> "PacsPeer":
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        ae = AE(ae_title=self.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


__all__ = ["dcmtk_tool", "free_port", "wait_until", "make_instance", "write_study", "storescu",
           "NodeProcess", "dcmtk_storescp", "PacsPeer", "dataset_body"]
