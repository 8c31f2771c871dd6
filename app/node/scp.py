"""The C-ECHO / C-STORE SCP: a pynetdicom AE that streams each instance to the spool.

Three choices matter:

* **Bounded memory.** Every C-STORE dataset is streamed by pynetdicom into a file
  under ``spool/tmp`` (``STORE_RECV_CHUNKED_DATASET``), never held whole in memory.
  :class:`LimitedAssociationSocket` refuses a PDU longer than we negotiate (a peer
  cannot make us allocate what it declares) and a C-STORE data set larger than
  ``scp.max_instance_mb``; deflated data sets are inflated through a size limit
  (:func:`~app.node.spool.inspect_instance_file`).
* **Timeouts that fire.** Accepted sockets get ``network_timeout_s`` and every PDU
  must arrive within it; the TLS handshake runs in the connection's own thread with
  its own time limit (never in the accept thread), and one host may hold at most
  ``max_associations_per_host`` connections.
* **Throughput.** dcmtk's ``storescu`` sends the command and the dataset as separate
  small writes; with Nagle on the sender and delayed ACK on our side every instance
  waited ~40 ms for the ACK timer. Accepted sockets therefore run with
  ``TCP_NODELAY`` and ``TCP_QUICKACK``; Linux clears QUICKACK again after some
  segments, so it is re-armed after every ``recv``. PDUs are read with ``recv_into``
  in large chunks instead of pynetdicom's 4 KiB ``recv`` + ``extend`` loop.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pynetdicom.dimse_messages
import pynetdicom.service_class
import pynetdicom.sop_class
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from .config import ScpConfig
from .spool import (STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES, STATUS_PROCESSING_FAILURE,
                    STATUS_SUCCESS, InvalidInstanceError, Spool, inspect_instance_file, is_valid_uid,
                    uid_key)

logger = logging.getLogger(__name__)

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_RECV_CHUNK = 1 << 20
#: A-ASSOCIATE-RQ/AC PDUs are not bound by the negotiated maximum; 1 MiB holds 128
#: presentation contexts with every transfer syntax.
_MIN_PDU_CAP = 1 << 20
_PDATA = 0x04
#: Siemens CSA Non-Image Storage: sent by Siemens scanners alongside MR series.
CSA_NON_IMAGE_STORAGE = "1.3.12.2.1107.5.9.1"
if not hasattr(pynetdicom.sop_class, "SiemensCSANonImageStorage"):
    pynetdicom.sop_class.register_uid(CSA_NON_IMAGE_STORAGE, "SiemensCSANonImageStorage",
                                      pynetdicom.service_class.StorageServiceClass)
#: A-ASSOCIATE-RJ permanent, by the service user, no reason given.
_REJECT_NO_CONTEXT = (0x01, 0x01, 0x01)


class PeerLimitExceeded(OSError):
    """A peer declared or sent more than the node accepts; the connection is closed."""


class LimitedAssociationSocket(AssociationSocket):
    """AssociationSocket with a PDU length cap, a per-instance size cap and a per-PDU deadline.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type and length) then
    ``recv(length)``. A length above :attr:`max_pdu_bytes` raises
    :class:`PeerLimitExceeded` before anything is allocated, which the DUL treats as
    a closed connection. P-DATA PDUs are scanned for their PDV headers so that the
    data set fragments of one DIMSE message are counted against
    :attr:`max_instance_bytes`.
    """

    quickack: bool = True
    max_pdu_bytes: int = _MIN_PDU_CAP
    max_instance_bytes: int = 1 << 30
    pdu_timeout_s: float = 60.0

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        header = not getattr(self, "_tsc_in_body", False)
        if not header:
            self._tsc_in_body = False
            if nr_bytes > self.max_pdu_bytes:
                raise PeerLimitExceeded(
                    f"peer declared a PDU of {nr_bytes} bytes, above the limit of {self.max_pdu_bytes}")
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        nr_read = 0
        deadline = time.monotonic() + self.pdu_timeout_s
        while nr_read < nr_bytes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PDU not received within {self.pdu_timeout_s:.0f} s")
            n = sock.recv_into(view[nr_read:], min(nr_bytes - nr_read, _RECV_CHUNK))
            if self.quickack and _TCP_QUICKACK is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                except OSError:
                    pass
            if not n:
                del view
                return buf[:nr_read]
            nr_read += n
        del view
        if header and nr_bytes == 6:
            self._tsc_in_body = True
            self._tsc_pdu_type = buf[0]
        elif not header and getattr(self, "_tsc_pdu_type", None) == _PDATA:
            self._count_dataset_bytes(buf)
        return buf

    def _count_dataset_bytes(self, body: bytearray) -> None:
        offset, total = 0, getattr(self, "_tsc_dataset_bytes", 0)
        while offset + 6 <= len(body):
            (length,) = struct.unpack_from(">L", body, offset)
            control = body[offset + 5]
            if not control & 0x01:  # data set fragment (not command)
                total += max(length - 2, 0)
                if total > self.max_instance_bytes:
                    raise PeerLimitExceeded(
                        f"data set larger than the limit of {self.max_instance_bytes} bytes")
                if control & 0x02:  # last fragment of this data set
                    total = 0
            offset += 4 + length
        self._tsc_dataset_bytes = total


FastAssociationSocket = LimitedAssociationSocket  # the name used before the limits were added


def _requested_called_ae(assoc: Any) -> str:
    primitive = getattr(assoc.requestor, "primitive", None)
    value = getattr(primitive, "called_ae_title", "") if primitive is not None else ""
    return _printable(value)


def _printable(value: Any, limit: int = 16) -> str:
    """An AE title as received, reduced to printable ASCII (it is peer-controlled)."""
    text = value.decode("ascii", "replace") if isinstance(value, (bytes, bytearray)) else str(value or "")
    return "".join(c if " " <= c <= "~" else "?" for c in text.strip())[:limit]


class FilteringRequestHandler(RequestHandler):
    """Admits a connection (host list, per-host limit, TLS handshake) and tunes its socket."""

    def handle(self) -> None:
        server = self.server
        host = str(self.client_address[0])
        sock = self.request
        allowed: Callable[[str], bool] = getattr(server, "host_allowed", lambda h: False)
        if not allowed(host):
            server.log_refusal(host, "conn_refused", "connection refused: host not allowed")
            _close(sock)
            return
        if not server.admit(host):
            server.log_refusal(host, "conn_limit", "connection refused: too many connections from this host")
            _close(sock)
            return
        try:
            try:
                sock.settimeout(server.network_timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if server.quickack and _TCP_QUICKACK is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass
            if server.tls_context is not None:
                try:
                    sock.settimeout(server.tls_handshake_timeout_s)
                    self.request = server.tls_context.wrap_socket(sock, server_side=True)
                    self.request.settimeout(server.network_timeout_s)
                except (OSError, ssl.SSLError) as exc:
                    server.log_refusal(host, "tls_failed", "TLS handshake failed or timed out",
                                       error=type(exc).__name__)
                    _close(sock)
                    return
            assoc = self._create_association()
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            # This connection thread lives as long as its association, so the per-host
            # count is released exactly when the association ends.
            assoc.join()
        finally:
            server.release(host)

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server = self.server
        # Swap the class rather than creating a second AssociationSocket, which
        # would queue a second transport-connect event in the state machine.
        sock = assoc.dul.socket
        sock.__class__ = LimitedAssociationSocket
        sock.quickack = server.quickack
        sock.max_pdu_bytes = server.max_pdu_bytes
        sock.max_instance_bytes = server.max_instance_bytes
        sock.pdu_timeout_s = server.network_timeout_s
        _reject_when_no_context_is_supported(assoc)
        return assoc


def _reject_when_no_context_is_supported(assoc: Any) -> None:
    """Answer an A-ASSOCIATE-RQ that proposes only unsupported abstract syntaxes with A-ASSOCIATE-RJ.

    pynetdicom would accept such an association with every context refused, which the
    requestor then aborts; a rejection tells the sender plainly that this node is the
    wrong destination for those objects.
    """
    acse = assoc.acse
    negotiate = acse._negotiate_as_acceptor

    def negotiate_or_reject() -> None:
        rq = acse.requestor.primitive
        supported = {str(cx.abstract_syntax) for cx in assoc.acceptor.supported_contexts}
        proposed = {str(cx.abstract_syntax) for cx in (rq.presentation_context_definition_list or [])}
        if proposed and not proposed & supported:
            acse.requestor.ae_title = rq.calling_ae_title
            assoc._tsc_reject_reason = "no supported abstract syntax"
            acse.send_reject(*_REJECT_NO_CONTEXT)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        negotiate()

    acse._negotiate_as_acceptor = negotiate_or_reject


def _close(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class LimitedAssociationServer(ThreadedAssociationServer):
    """Threaded server that admits connections per host and does TLS in the connection thread."""

    host_allowed: Callable[[str], bool]
    quickack: bool = True
    max_per_host: int = 16
    max_pdu_bytes: int = _MIN_PDU_CAP
    max_instance_bytes: int = 1 << 30
    network_timeout_s: float = 60.0
    tls_handshake_timeout_s: float = 10.0
    tls_context: ssl.SSLContext | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted: dict[str, int] = {}
        self._admit_lock = threading.Lock()
        self._refusals: dict[tuple[str, str], list[float]] = {}

    def get_request(self) -> tuple[socket.socket, Any]:
        # pynetdicom wraps TLS here, in the single accept thread: one silent peer would
        # block every other connection. The handshake is done by the handler instead.
        assert self.socket is not None
        return self.socket.accept()

    def admit(self, host: str) -> bool:
        """Count a connection from ``host``; False when the host is at its limit."""
        with self._admit_lock:
            n = self._admitted.get(host, 0)
            if n >= self.max_per_host:
                return False
            self._admitted[host] = n + 1
            return True

    def release(self, host: str) -> None:
        """Called when the connection's association (or its refusal) has ended."""
        with self._admit_lock:
            n = self._admitted.get(host, 0) - 1
            if n <= 0:
                self._admitted.pop(host, None)
            else:
                self._admitted[host] = n

    def connections_from(self, host: str) -> int:
        with self._admit_lock:
            return self._admitted.get(host, 0)

    def log_refusal(self, host: str, event: str, message: str, **extra: Any) -> None:
        logger.warning(message, extra={"event": event, "peer_host": host, **extra})


def host_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Return a predicate for host addresses: IPs or CIDRs; ``any`` admits every host, ``[]`` none."""
    if any(p.strip().lower() == "any" for p in patterns):
        return lambda host: True
    nets = [ipaddress.ip_network(p.strip(), strict=False) for p in patterns]

    def allowed(host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in nets if net.version == addr.version)

    return allowed


def make_ssl_context(cert_file: str, key_file: str, ca_file: str = "") -> ssl.SSLContext:
    """Server-side TLS context; a CA file makes client certificates mandatory."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


_tmpfile_lock = threading.Lock()


def _stream_datasets_to(folder: Path) -> None:
    """Make pynetdicom write each received C-STORE data set to a file in ``folder``.

    pynetdicom creates that file with ``NamedTemporaryFile`` in the default temporary
    folder; pointing it at the spool's ``tmp/`` keeps it on the spool's filesystem, so
    the file is renamed into place rather than copied, and ``min_free_mb`` covers it.
    """
    with _tmpfile_lock:
        _config.STORE_RECV_CHUNKED_DATASET = True
        pynetdicom.dimse_messages.NamedTemporaryFile = partial(  # type: ignore[attr-defined]
            tempfile.NamedTemporaryFile, dir=str(folder), prefix="rx-")


class StoreScp:
    """C-ECHO and C-STORE SCP writing into a :class:`~app.node.spool.Spool`.

    Args:
        config: SCP settings (AE title, address, allowed peers, limits, TLS).
        spool: Where instances are written.
        on_stored: Optional callback ``(study_key) -> None`` after each stored instance.
        interrupted_hold_s: How long a study whose association ended without release
            stays open for a retry.
    """

    def __init__(self, config: ScpConfig, spool: Spool,
                 on_stored: Callable[[str], None] | None = None,
                 interrupted_hold_s: float = 0.0) -> None:
        self.interrupted_hold_s = interrupted_hold_s
        self.config = config
        self.spool = spool
        self.on_stored = on_stored
        self.server: LimitedAssociationServer | None = None
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        ae.require_called_aet = True
        if "*" not in cfg.allowed_calling_aes:
            ae.require_calling_aet = list(cfg.allowed_calling_aes)
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu_size
        ae.network_timeout = cfg.network_timeout_s
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(CSA_NON_IMAGE_STORAGE, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Bind and serve in background threads (non-blocking)."""
        cfg = self.config
        _stream_datasets_to(self.spool.path("tmp"))
        handlers = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_ESTABLISHED, self._handle_established),
            (evt.EVT_ABORTED, self._handle_aborted),
            (evt.EVT_CONN_CLOSE, self._handle_closed),
        ]
        server = self.ae.make_server(
            (cfg.host, cfg.port), ae_title=cfg.ae_title, evt_handlers=handlers,
            server_class=LimitedAssociationServer, request_handler=FilteringRequestHandler)
        assert isinstance(server, LimitedAssociationServer)
        server.host_allowed = host_matcher(cfg.allowed_hosts)
        server.quickack = cfg.quickack
        server.max_per_host = cfg.max_associations_per_host
        # The negotiated maximum bounds P-DATA; association PDUs get at least 1 MiB.
        server.max_pdu_bytes = max(cfg.max_pdu_size + 64, _MIN_PDU_CAP)
        server.max_instance_bytes = int(cfg.max_instance_mb * 1024 * 1024)
        server.network_timeout_s = cfg.network_timeout_s
        server.tls_handshake_timeout_s = cfg.tls_handshake_timeout_s
        if cfg.tls.enabled:
            server.tls_context = make_ssl_context(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file)
        server.daemon_threads = True
        self.ae._servers.append(server)
        self.server = server
        threading.Thread(target=server.serve_forever, name="scp-accept", daemon=True).start()
        if any(p.strip().lower() == "any" for p in cfg.allowed_hosts):
            logger.warning("scp.allowed_hosts is 'any': every host may connect",
                           extra={"event": "scp_any_host"})
        logger.info("SCP listening", extra={"event": "scp_listening", "ae_title": cfg.ae_title,
                                            "host": cfg.host, "port": self.port,
                                            "tls": cfg.tls.enabled})

    def stop(self) -> None:
        """Stop accepting, abort open associations and close the socket."""
        if self.server is not None:
            server, self.server = self.server, None
            server.shutdown()
            for assoc in list(server.active_associations):
                assoc.abort()
        logger.info("SCP stopped", extra={"event": "scp_stopped"})

    # Handlers -----------------------------------------------------------------

    @staticmethod
    def _peer(event: Any) -> dict[str, Any]:
        req = event.assoc.requestor
        return {"calling_ae": _printable(req.ae_title), "peer_host": req.address}

    def _handle_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _handle_rejected(self, event: Any) -> None:
        assoc = event.assoc
        reason = getattr(assoc, "_tsc_reject_reason", None) or \
            "called/calling AE title not allowed or association limit reached"
        logger.warning("association rejected: %s", reason,
                       extra={"event": "assoc_rejected", **self._peer(event),
                              "called_ae": _requested_called_ae(assoc)})

    def _handle_established(self, event: Any) -> None:
        logger.debug("association established", extra={"event": "assoc_established",
                                                        **self._peer(event)})

    def _handle_aborted(self, event: Any) -> None:
        logger.info("association aborted", extra={"event": "assoc_aborted", **self._peer(event)})

    def _handle_closed(self, event: Any) -> None:
        assoc = event.assoc
        studies = getattr(assoc, "_tsc_studies", None)
        if studies and not assoc.is_released:
            # Aborted or dropped mid-study: the sender will likely retry the whole study.
            self.spool.hold(studies, self.interrupted_hold_s)
            logger.warning("association ended without release; its studies wait for a retry",
                           extra={"event": "assoc_interrupted", "studies": len(studies),
                                  "hold_s": self.interrupted_hold_s, **self._peer(event)})

    def _handle_store(self, event: Any) -> int:
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        ts = str(event.context.transfer_syntax)
        try:
            path = Path(event.dataset_path)
        except (AttributeError, TypeError):
            return STATUS_CANNOT_UNDERSTAND
        if str(request.AffectedSOPClassUID or "") == CSA_NON_IMAGE_STORAGE and \
                self.config.csa_non_image == "ignore":
            # Acknowledged so that the sender's routing job completes, but not kept.
            logger.debug("CSA Non-Image instance ignored", extra={"event": "csa_ignored", **self._peer(event)})
            return STATUS_SUCCESS
        size = path.stat().st_size
        try:
            header = inspect_instance_file(path, ts, max_inflated_bytes=self.server.max_instance_bytes
                                           if self.server else 1 << 30, tmp_dir=self.spool.path("tmp"))
        except InvalidInstanceError as exc:
            logger.warning("instance rejected: %s", exc, extra={
                "event": "instance_rejected", "sop_instance_uid_key": uid_key(sop_uid),
                "bytes": size, **self._peer(event)})
            return STATUS_CANNOT_UNDERSTAND
        if header.sop_instance_uid and header.sop_instance_uid != sop_uid:
            logger.warning("instance rejected: SOP Instance UID differs from the C-STORE request",
                           extra={"event": "instance_rejected", "sop_instance_uid_key": uid_key(sop_uid),
                                  **self._peer(event)})
            return STATUS_CANNOT_UNDERSTAND
        bad = [name for name, uid in (("StudyInstanceUID", header.study_uid),
                                      ("SeriesInstanceUID", header.series_uid),
                                      ("SOPInstanceUID", sop_uid)) if not is_valid_uid(uid)]
        if bad:
            kept = self.spool.quarantine_instance(path, sop_uid)
            logger.warning("instance quarantined: malformed %s", ", ".join(bad), extra={
                "event": "instance_quarantined", "sop_instance_uid_key": uid_key(sop_uid),
                "quarantined_as": kept.name if kept else None, **self._peer(event)})
            return STATUS_CANNOT_UNDERSTAND
        if not self.spool.has_room_for(4096):
            logger.error("instance refused: free disk below threshold", extra={
                "event": "out_of_resources", "free_bytes": self.spool.free_bytes(),
                "min_free_bytes": self.spool.min_free_bytes})
            return STATUS_OUT_OF_RESOURCES
        try:
            self.spool.store_file(path, header, sop_uid)
        except OSError as exc:
            logger.error("instance not stored: %s", exc.strerror or type(exc).__name__,
                         extra={"event": "store_failed", "study_key": uid_key(header.study_uid)})
            return STATUS_OUT_OF_RESOURCES
        except Exception:
            logger.exception("instance not stored", extra={"event": "store_failed"})
            return STATUS_PROCESSING_FAILURE
        study_key = uid_key(header.study_uid)
        studies = getattr(event.assoc, "_tsc_studies", None)
        if studies is None:
            studies = event.assoc._tsc_studies = set()
        studies.add(study_key)
        if self.on_stored is not None:
            self.on_stored(study_key)
        return STATUS_SUCCESS
