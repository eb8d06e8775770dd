"""One HTTP server per simulated recorder, speaking ISAPI plus the `/_sim/` control endpoints."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from stack.ports import HOST
from stack.simulator import isapi_xml
from stack.simulator.digest import DigestAuthority
from stack.simulator.faults import FaultState
from stack.simulator.recordings import Segment, build_catalogue, find_overlapping, parse_playback_uri
from stack.simulator.spec import RecorderSpec, SimulatorSpec

CHUNK = 64 * 1024
MAX_BODY = 1024 * 1024
SOCKET_TIMEOUT_S = 60


class Recorder:
    """Everything one simulated device knows: its spec, recordings, auth and faults."""

    def __init__(self, spec: RecorderSpec, sim: SimulatorSpec) -> None:
        self.spec = spec
        self.sim = sim
        self.auth = DigestAuthority(realm=spec.model, algorithm=spec.digest_algorithm)
        self.faults = FaultState()
        self.segments: list[Segment] = build_catalogue(spec, sim.width, sim.height, sim.fps)
        self.by_name = {s.name: s for s in self.segments}


class RecorderServer(ThreadingHTTPServer):
    # SO_REUSEADDR only, never SO_REUSEPORT: on Linux a port someone listens on still fails
    # loudly, while a restart is not blocked by the TIME_WAIT remnants of the last run.
    allow_reuse_address = True
    allow_reuse_port = False
    daemon_threads = True
    request_queue_size = 64

    recorder: Recorder

    def __init__(self, port: int, host: str = HOST) -> None:
        super().__init__((host, port), RecorderHandler, bind_and_activate=False)
        try:
            self.server_bind()
        except OSError as exc:
            self.server_close()
            raise OSError(exc.errno, f"port {port} on {host} is already in use: {exc.strerror}") from exc


ISAPI_GET = {
    "/ISAPI/System/deviceInfo",
    "/ISAPI/System/time",
    "/ISAPI/Streaming/channels",
    "/ISAPI/ContentMgmt/record/tracks",
    "/ISAPI/ContentMgmt/search/profile",
    "/ISAPI/ContentMgmt/download/capabilities",
    "/ISAPI/ContentMgmt/download",
}
ISAPI_POST = {"/ISAPI/ContentMgmt/search", "/ISAPI/ContentMgmt/download"}


class RecorderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecorderServer
    server_version = "App-webs/"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SOCKET_TIMEOUT_S)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # the simulator is quiet; tests read /_sim/stats instead

    @property
    def rec(self) -> Recorder:
        return self.server.recorder

    # -- plumbing -----------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str = "application/xml", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _status(self, status: int, code: int, text: str, sub: str) -> None:
        self._send(status, isapi_xml.response_status(self.path, code, text, sub))

    def _refuse(self, status: int, sub_status: str) -> None:
        """Refuse as firmware does: the HTTP status plus a ResponseStatus naming the reason."""
        self.rec.faults.count_refusal(sub_status)
        self._send(status, isapi_xml.refusal(self.path, sub_status))

    def _drop(self) -> None:
        """Close the socket without a word, like a device that went away."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- dispatch -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            body = self._read_body()
        except ValueError:
            self._status(413, 4, "Invalid Operation", "badParameters")
            return
        if path.startswith("/_sim/"):
            self._control(path, body)
            return
        faults = self.rec.faults.snapshot()
        if faults["offline"]:
            self.rec.faults.count_offline(path)
            self._drop()
            return
        self.rec.faults.count_request(path)
        if faults["latency_ms"]:
            time.sleep(faults["latency_ms"] / 1000)
        if not path.startswith("/ISAPI/"):
            self._status(404, 4, "Invalid Operation", "notSupport")
            return
        known = path in ISAPI_GET or path in ISAPI_POST
        allowed = (self.command == "GET" and path in ISAPI_GET) or (
            self.command == "POST" and path in ISAPI_POST
        )
        if not known:
            self._status(404, 4, "Invalid Operation", "notSupport")
            return
        password = "" if faults["wrong_password"] else self.rec.spec.password
        if faults["wrong_password"] or not self.rec.auth.verify(
            self.headers.get("Authorization"), self.command, self.rec.spec.username, password
        ):
            self._send(
                401, isapi_xml.user_check_401(), headers={"WWW-Authenticate": self.rec.auth.challenge()}
            )
            return
        if self.rec.faults.low_privilege_for(path):
            # Authenticated but not authorised: real firmware checks user rights after the login.
            self._refuse(403, "lowPrivilege")
            return
        if not allowed:
            self._send(
                405,
                isapi_xml.response_status(self.path, 4, "Invalid Operation", "methodNotAllowed"),
                headers={"Allow": "GET" if path in ISAPI_GET and path not in ISAPI_POST else "POST"},
            )
            return
        error = self.rec.faults.should_fail()
        if error is not None:
            self._status(error, 6, "Device Error", "deviceBusy")
            return
        self._isapi(path, body, faults)

    def _isapi(self, path: str, body: bytes, faults: dict) -> None:
        spec, sim = self.rec.spec, self.rec.sim
        if path == "/ISAPI/System/deviceInfo":
            self._send(200, isapi_xml.device_info(spec))
        elif path == "/ISAPI/System/time":
            now = datetime.now(UTC) + timedelta(seconds=faults["clock_offset_s"])
            self._send(200, isapi_xml.device_time(spec, now))
        elif path == "/ISAPI/Streaming/channels":
            self._send(200, isapi_xml.streaming_channels(spec, sim))
        elif path == "/ISAPI/ContentMgmt/record/tracks":
            self._send(200, isapi_xml.record_tracks(spec))
        elif path == "/ISAPI/ContentMgmt/search/profile":
            self._send(200, isapi_xml.search_profile(spec))
        elif path == "/ISAPI/ContentMgmt/download/capabilities":
            self._send(200, isapi_xml.download_capabilities())
        elif path == "/ISAPI/ContentMgmt/search":
            self._search(body, faults["hostile"])
        elif path == "/ISAPI/ContentMgmt/download":
            self._download(body, faults)

    def _search(self, body: bytes, hostile: str) -> None:
        if hostile == "xml_bomb":
            self._send(200, isapi_xml.XML_BOMB)
            return
        if hostile == "external_entity":
            self._send(200, isapi_xml.EXTERNAL_ENTITY)
            return
        if hostile == "endless_search":
            self._endless(
                isapi_xml.ENDLESS_SEARCH_HEAD, lambda: isapi_xml.ENDLESS_SEARCH_ITEM, "application/xml"
            )
            return
        try:
            request = isapi_xml.parse_search(body, self.rec.spec.tz)
        except isapi_xml.BadRequest:
            self._status(400, 5, "Invalid XML Content", "badXmlContent")
            return
        if self.rec.spec.track_element == "trackList" and "trackIDList" in request.track_elements:
            # Such firmware validates against its own schema: it knows the track list only as
            # <trackList> and refuses <trackIDList> as invalid content instead of ignoring it.
            # Firmware that speaks <trackIDList> accepts either spelling.
            self._status(400, 6, "Invalid XML Content", "badXmlContent")
            return
        matches = find_overlapping(self.rec.segments, request.tracks, request.spans)
        prefix = isapi_xml.HOSTILE_NAME_PREFIX if hostile == "hostile_names" else ""
        self._send(200, isapi_xml.search_result(request, matches, name_prefix=prefix))

    def _download_form(self, body: bytes) -> str:
        """post_xml, get_xml or get_query: which documented request form this download uses."""
        return f"{self.command.lower()}_{'xml' if body.strip() else 'query'}"

    def _download(self, body: bytes, faults: dict) -> None:
        form = self._download_form(body)
        shape = isapi_xml.download_body_shape(body) if body.strip() else None
        self.rec.faults.count_download_form(form, shape)
        refusal = self.rec.faults.download_refusal(form)
        if refusal is not None:
            self._refuse(*refusal)
            return
        if shape is not None and self.rec.faults.body_refused(shape):
            # Firmware that checks the body against its own schema: another namespace is invalid content.
            self._refuse(400, "badXmlContent")
            return
        try:
            if body.strip():
                uri = isapi_xml.parse_download(body)
            else:
                query = parse_qs(urlsplit(self.path).query)
                uri = query["playbackURI"][0]
        except (isapi_xml.BadRequest, KeyError):
            self._status(400, 5, "Invalid XML Content", "badXmlContent")
            return
        track, params = parse_playback_uri(uri)
        segment = self.rec.by_name.get(params.get("name", "").removeprefix(isapi_xml.HOSTILE_NAME_PREFIX))
        if segment is None or (track is not None and track != segment.track_id):
            self._status(404, 4, "Invalid Operation", "noRecord")
            return
        if faults["hostile"] == "endless_download":
            source = segment.path.open("rb")
            try:
                self._endless(source.read(), lambda: bytes(CHUNK), "application/octet-stream")
            finally:
                source.close()
            return
        self._stream(segment, faults)

    def _endless(self, head: bytes, more: Callable[[], bytes], content_type: str) -> None:
        """A 200 answer with no length that goes on until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(head)
            while True:
                self.wfile.write(more())
        except OSError:
            pass

    def _stream(self, segment: Segment, faults: dict) -> None:
        length = segment.size
        if faults["wrong_size"]:
            length = max(1, segment.size - max(1024, segment.size // 10))
        drop_after = faults["drop_after_bytes"] or None
        bandwidth = faults["bandwidth_bps"]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Disposition", f'attachment; filename="{segment.name}.mp4"')
        self.end_headers()
        stats = self.rec.faults
        stats.download_started()
        sent, complete = 0, False
        started = time.monotonic()
        chunk = CHUNK if not bandwidth else max(1024, min(CHUNK, bandwidth // 20))
        try:
            with segment.path.open("rb") as source:
                while sent < length:
                    want = min(chunk, length - sent)
                    if drop_after is not None:
                        want = min(want, drop_after - sent)
                        if want <= 0:
                            self._drop()
                            return
                    data = source.read(want)
                    if not data:
                        break
                    self.wfile.write(data)
                    sent += len(data)
                    if bandwidth:
                        ahead = sent / bandwidth - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            self.wfile.flush()
            complete = sent == length
        except OSError:
            self.close_connection = True
        finally:
            stats.download_finished(sent, complete)

    # -- control --------------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        faults = self.rec.faults
        if path == "/_sim/faults":
            if self.command == "GET":
                self._json(200, faults.snapshot())
            elif self.command == "PUT":
                try:
                    changes = json.loads(body or b"{}")
                    if not isinstance(changes, dict):
                        raise ValueError("expected a JSON object")
                    self._json(200, faults.update(changes))
                except (ValueError, TypeError) as exc:
                    self._json(400, {"error": str(exc)})
            elif self.command == "DELETE":
                self._json(200, faults.reset())
            else:
                self._json(405, {"error": "use GET, PUT or DELETE"})
        elif path == "/_sim/stats":
            if self.command == "GET":
                self._json(200, faults.stats())
            elif self.command == "DELETE":
                faults.reset_stats()
                self._json(200, faults.stats())
            else:
                self._json(405, {"error": "use GET or DELETE"})
        elif path == "/_sim/segments" and self.command == "GET":
            self._json(
                200,
                {
                    "segments": [
                        {
                            "track_id": s.track_id,
                            "start": s.start.isoformat(),
                            "end": s.end.isoformat(),
                            "name": s.name,
                            "size": s.size,
                            "playback_uri": s.playback_uri(),
                        }
                        for s in self.rec.segments
                    ]
                },
            )
        else:
            self._json(404, {"error": f"unknown control path {path}"})


def serve(sim: SimulatorSpec, stop: threading.Event) -> None:
    """Bind every recorder's port (failing loudly if one is taken), prepare footage, serve until stop."""
    servers: list[RecorderServer] = []
    try:
        # Bound but not yet listening while footage is prepared: ports are claimed at once,
        # and clients see a recorder only when it can answer.
        for rec_spec in sim.recorders:
            servers.append(RecorderServer(rec_spec.port, sim.host))
        for server, rec_spec in zip(servers, sim.recorders, strict=True):
            server.recorder = Recorder(rec_spec, sim)
        for server in servers:
            try:
                server.server_activate()
            except OSError as exc:
                port = server.server_address[1]
                raise OSError(
                    exc.errno, f"port {port} on {sim.host} is already in use: {exc.strerror}"
                ) from exc
        threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            for s in servers
        ]
        for thread in threads:
            thread.start()
        ready = [{"name": r.name, "port": r.port} for r in sim.recorders]
        print(json.dumps({"ready": ready}), flush=True)
        stop.wait()
        for server in servers:
            server.shutdown()
    finally:
        for server in servers:
            server.server_close()
