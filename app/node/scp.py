"""The C-ECHO / C-STORE SCP: a pynetdicom AE that writes raw bytes to the spool.

Two choices matter for throughput:

* The C-STORE handler never decodes the dataset: it takes the encoded stream
  (``event.request.DataSet``), checks its element headers with
  :func:`~app.node.spool.inspect_dataset` and writes preamble + file meta +
  stream as received.
* dcmtk's ``storescu`` sends the command and the dataset as separate small
  writes; with Nagle on the sender and delayed ACK on our side every instance
  waited ~40 ms for the ACK timer. The accepted sockets therefore run with
  ``TCP_NODELAY`` and ``TCP_QUICKACK``; Linux clears QUICKACK again after some
  segments, so it is re-armed after every ``recv``. The same socket subclass
  also reads a PDU with ``recv_into`` in large chunks instead of pynetdicom's
  4 KiB ``recv`` + ``extend`` loop.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from typing import Any, Callable

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from .config import ScpConfig
from .spool import (STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES, STATUS_PROCESSING_FAILURE,
                    STATUS_SUCCESS, InvalidInstanceError, Spool, inspect_dataset, uid_key)

logger = logging.getLogger(__name__)

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_RECV_CHUNK = 1 << 20


class FastAssociationSocket(AssociationSocket):
    """AssociationSocket that re-arms TCP_QUICKACK after each read and reads in large chunks."""

    quickack: bool = True

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        nr_read = 0
        while nr_read < nr_bytes:
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
        return buf


class FilteringRequestHandler(RequestHandler):
    """Closes connections from hosts that are not allowed and tunes accepted sockets."""

    def handle(self) -> None:
        server = self.server
        host = str(self.client_address[0])
        allowed: Callable[[str], bool] = getattr(server, "host_allowed", lambda h: True)
        if not allowed(host):
            logger.warning("connection refused: host not allowed",
                           extra={"event": "conn_refused", "peer_host": host})
            return
        sock = self.request
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if getattr(server, "quickack", True) and _TCP_QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass
        super().handle()

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        if getattr(self.server, "quickack", True):
            # Swap the class rather than creating a second AssociationSocket, which
            # would queue a second transport-connect event in the state machine.
            assoc.dul.socket.__class__ = FastAssociationSocket
        return assoc


def host_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Return a predicate for host addresses: empty list = any, entries are IPs or CIDRs."""
    if not patterns:
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


class StoreScp:
    """C-ECHO and C-STORE SCP writing into a :class:`~app.node.spool.Spool`.

    Args:
        config: SCP settings (AE title, address, allowed peers, TLS).
        spool: Where instances are written.
        on_stored: Optional callback ``(study_key) -> None`` after each stored instance.
    """

    def __init__(self, config: ScpConfig, spool: Spool,
                 on_stored: Callable[[str], None] | None = None,
                 interrupted_hold_s: float = 0.0) -> None:
        self.interrupted_hold_s = interrupted_hold_s
        self.config = config
        self.spool = spool
        self.on_stored = on_stored
        self.server: ThreadedAssociationServer | None = None
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
        ae.add_supported_context(Verification)
        return ae

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Bind and serve in background threads (non-blocking)."""
        cfg = self.config
        ssl_context = None
        if cfg.tls.enabled:
            ssl_context = make_ssl_context(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file)
        handlers = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_ESTABLISHED, self._handle_established),
            (evt.EVT_ABORTED, self._handle_aborted),
            (evt.EVT_CONN_CLOSE, self._handle_closed),
        ]
        server = self.ae.make_server(
            (cfg.host, cfg.port), ae_title=cfg.ae_title, ssl_context=ssl_context,
            evt_handlers=handlers, server_class=ThreadedAssociationServer,
            request_handler=FilteringRequestHandler)
        server.host_allowed = host_matcher(cfg.allowed_hosts)  # type: ignore[attr-defined]
        server.quickack = cfg.quickack  # type: ignore[attr-defined]
        server.daemon_threads = True
        self.ae._servers.append(server)
        self.server = server
        threading.Thread(target=server.serve_forever, name="scp-accept", daemon=True).start()
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
        return {"calling_ae": str(req.ae_title).strip(), "peer_host": req.address}

    def _handle_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _handle_rejected(self, event: Any) -> None:
        logger.warning("association rejected (called/calling AE title not allowed)",
                       extra={"event": "assoc_rejected", **self._peer(event),
                              "called_ae": str(event.assoc.acceptor.ae_title).strip()})

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
            stream = request.DataSet.getvalue()
        except AttributeError:
            return STATUS_CANNOT_UNDERSTAND
        try:
            header = inspect_dataset(stream, ts)
        except InvalidInstanceError as exc:
            logger.warning("instance rejected: %s", exc, extra={
                "event": "instance_rejected", "sop_instance_uid_key": uid_key(sop_uid),
                "bytes": len(stream), **self._peer(event)})
            return STATUS_CANNOT_UNDERSTAND
        if header.sop_instance_uid and header.sop_instance_uid != sop_uid:
            logger.warning("instance rejected: SOP Instance UID differs from the C-STORE request",
                           extra={"event": "instance_rejected", "sop_instance_uid_key": uid_key(sop_uid),
                                  **self._peer(event)})
            return STATUS_CANNOT_UNDERSTAND
        if not self.spool.has_room_for(len(stream) + 4096):
            logger.error("instance refused: free disk below threshold", extra={
                "event": "out_of_resources", "free_bytes": self.spool.free_bytes(),
                "min_free_bytes": self.spool.min_free_bytes})
            return STATUS_OUT_OF_RESOURCES
        try:
            meta = b"".join((b"\x00" * 128, b"DICM", encode_file_meta(event.file_meta)))
            self.spool.store(stream, meta, header, sop_uid)
        except OSError as exc:
            logger.error("instance not stored: %s", exc.strerror or exc,
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
