#!/usr/bin/env python3
"""A real OTLP metrics receiver for kusto-metrics' end-to-end tests.

It decodes with the official Python protobuf bindings (`opentelemetry-proto`,
`protobuf`) and serves gRPC with `grpcio`, so the tests check the Rust
exporter against an implementation that shares none of its code.

    otlp_receiver.py --http-port P --grpc-port Q --out FILE [--control-port C]

Any port may be 0 (pick a free one). Once every listener is up, one line of
JSON goes to stdout, e.g. `{"http": 40123, "grpc": 40124, "control": 40125}`.
Logs go to stderr. SIGTERM and SIGINT stop it cleanly (exit status 0).

Export endpoints
  OTLP/HTTP  POST /v1/metrics, Content-Type application/x-protobuf or
             application/json, optional Content-Encoding: gzip. The answer is
             an empty ExportMetricsServiceResponse in the request's encoding.
  OTLP/gRPC  opentelemetry.proto.collector.metrics.v1.MetricsService/Export,
             plain or gzip-compressed.

Every accepted request is appended to FILE as one line of JSON, flushed at
once:
    {"transport": "http"|"grpc", "encoding": "protobuf"|"json",
     "gzip": bool, "headers": {lowercased name: value},
     "request": MessageToDict(request)}
With --values-only, a line holds the request's number point values
instead of the request, in order: {"transport", "encoding", "gzip",
"headers", "values": [...]} (for millions of points, which as JSON dicts
would not fit a test's time or memory).
A malformed request gets 400 (gRPC: INVALID_ARGUMENT) with a message and is
not recorded.

Control endpoints (plain HTTP on the control port, JSON bodies)
  POST /fail {"count": N, "status": 503, "retryAfter": 1, "after": K}
                (K requests, default 0, are let through first)
        The next N export requests are refused with that HTTP status (gRPC:
        503/502/504 UNAVAILABLE, 429 RESOURCE_EXHAUSTED, 400 INVALID_ARGUMENT,
        500 INTERNAL, ...) and not recorded. With retryAfter, HTTP answers
        carry `Retry-After: <seconds>` and gRPC ones a google.rpc.RetryInfo.
  POST /partial {"rejected": K, "message": "...", "count": 1}
        The next accepted request is recorded and answered with a
        partial_success naming K rejected data points.
  POST /accept-then-drop {"count": N}
        The next N accepted requests are recorded, then the answer is lost:
        over HTTP the connection is closed without a response; over gRPC
        (which cannot close a connection from a handler) the call ends with
        UNAVAILABLE, what a client sees when its connection breaks.
  POST /slow {"seconds": S}
        Every OTLP/HTTP request from now on is recorded at once and answered
        S seconds later (a receiver that has the points but is slow to say
        so); 0 turns it off.
  POST /reset   Forget pending faults and zero the counters (FILE is kept).
  GET  /stats   {"accepted": n, "refused": m, "malformed": k, "dropped": d}
        accepted: recorded requests (dropped ones included); refused: refused
        by /fail; malformed: answered 400/415/INVALID_ARGUMENT.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import logging
import signal
import sys
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    json_format,
    message_factory,
)
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

ExportRequest = metrics_service_pb2.ExportMetricsServiceRequest
ExportResponse = metrics_service_pb2.ExportMetricsServiceResponse
SERVICE_NAME = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

log = logging.getLogger("otlp_receiver")

# HTTP status -> gRPC status code, after gRPC's doc/http-grpc-status-mapping.md
# plus the codes OTLP names for throttling and bad data.
GRPC_CODE_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


# --------------------------------------------------------------------------
# google.rpc.Status and google.rpc.RetryInfo, which OTLP uses for error
# answers. They live in googleapis-common-protos; rather than one more
# package, declare the two small messages in a private descriptor pool.


def _rpc_messages():
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2, duration_pb2):
        pool.AddSerializedFile(well_known.DESCRIPTOR.serialized_pb)
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="otlp_receiver/google_rpc.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    status = proto.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(
        name="details", number=3, type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Any", label=field.LABEL_REPEATED,
    )
    retry_info = proto.message_type.add(name="RetryInfo")
    retry_info.field.add(
        name="retry_delay", number=1, type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Duration", label=field.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


RpcStatus, RetryInfo = _rpc_messages()


# --------------------------------------------------------------------------
# What the control port sets and the export endpoints consume.


class Fault:
    """How one export request is to be answered."""

    def __init__(self, kind, status=None, retry_after=None, rejected=0, message=""):
        self.kind = kind  # "fail" | "accept" | "partial" | "drop"
        self.status = status
        self.retry_after = retry_after
        self.rejected = rejected
        self.message = message


class State:
    """Pending faults, counters and the output file, behind one lock."""

    def __init__(self, out_path):
        self.lock = threading.Lock()
        self.out = open(out_path, "a", encoding="utf-8")
        self.reset()

    def reset(self):
        with self.lock:
            self.fail_count = 0
            self.fail_after = 0
            self.fail_status = 503
            self.fail_retry_after = None
            self.partial = []  # (rejected, message), one per request
            self.drop_count = 0
            self.slow = 0.0
            self.stats = {"accepted": 0, "refused": 0, "malformed": 0, "dropped": 0}

    def set_fail(self, count, status, retry_after, after=0):
        with self.lock:
            self.fail_count = count
            self.fail_after = after
            self.fail_status = status
            self.fail_retry_after = retry_after

    def add_partial(self, count, rejected, message):
        with self.lock:
            self.partial.extend([(rejected, message)] * count)

    def set_drop(self, count):
        with self.lock:
            self.drop_count = count

    def admit(self):
        """Called before decoding: a Fault("fail") if this request is refused."""
        with self.lock:
            if self.fail_count > 0 and self.fail_after > 0:
                self.fail_after -= 1
            elif self.fail_count > 0:
                self.fail_count -= 1
                self.stats["refused"] += 1
                return Fault("fail", self.fail_status, self.fail_retry_after)
            return None

    def malformed(self):
        with self.lock:
            self.stats["malformed"] += 1

    def record(self, entry):
        """Writes a decoded request and says how to answer it."""
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()
            self.stats["accepted"] += 1
            if self.drop_count > 0:
                self.drop_count -= 1
                self.stats["dropped"] += 1
                return Fault("drop")
            if self.partial:
                rejected, message = self.partial.pop(0)
                return Fault("partial", rejected=rejected, message=message)
            return Fault("accept")

    def snapshot(self):
        with self.lock:
            return dict(self.stats)

    def close(self):
        with self.lock:
            self.out.close()


def export_response(fault):
    response = ExportResponse()
    if fault.kind == "partial":
        response.partial_success.rejected_data_points = fault.rejected
        response.partial_success.error_message = fault.message
    return response


def count_points(request):
    points = 0
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind:
                    points += len(getattr(metric, kind).data_points)
    return points


VALUES_ONLY = False


def point_values(request):
    values = []
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind in ("gauge", "sum"):
                    for point in getattr(metric, kind).data_points:
                        if point.WhichOneof("value") == "as_int":
                            values.append(point.as_int)
                        else:
                            values.append(point.as_double)
    return values


def entry(transport, encoding, gzipped, headers, request):
    recorded = {
        "transport": transport,
        "encoding": encoding,
        "gzip": gzipped,
        "headers": headers,
    }
    if VALUES_ONLY:
        recorded["values"] = point_values(request)
    else:
        recorded["request"] = json_format.MessageToDict(
            request, preserving_proto_field_name=False, use_integers_for_enums=True,
        )
    return recorded


class BadRequest(Exception):
    """A request that cannot be decoded; its message goes back to the client."""


def decode(body, encoding):
    request = ExportRequest()
    try:
        if encoding == "protobuf":
            request.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8"), request)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as err:
        raise BadRequest(f"cannot decode ExportMetricsServiceRequest ({encoding}): {err}") from err
    return request


def gunzip(body):
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error) as err:
        raise BadRequest(f"cannot gunzip the body: {err}") from err


# --------------------------------------------------------------------------
# OTLP/HTTP


class HttpBase(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as exporters expect

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length))

    def answer(self, status, body=b"", content_type="text/plain; charset=utf-8", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def answer_text(self, status, text):
        self.answer(status, (text + "\n").encode("utf-8"))


class ExportHandler(HttpBase):
    state: State  # set on the subclass that main() makes

    def do_POST(self):
        if self.path.split("?")[0] != "/v1/metrics":
            self.close_connection = True  # the body is left unread
            self.answer_text(404, f"no such endpoint: {self.path}")
            return
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        encoding = {"application/x-protobuf": "protobuf", "application/json": "json"}.get(media_type)
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            self.state.malformed()
            self.answer_text(400, "bad chunked body")
            return
        if body is None:
            self.state.malformed()
            self.answer_text(411, "Content-Length or chunked Transfer-Encoding required")
            return

        fault = self.state.admit()
        if fault is not None:
            self.refuse(fault, encoding or "protobuf")
            return
        if encoding is None:
            self.state.malformed()
            self.answer_text(415, f"unsupported Content-Type {media_type!r}")
            return
        content_encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if content_encoding not in ("identity", "gzip"):
            self.state.malformed()
            self.answer_text(415, f"unsupported Content-Encoding {content_encoding!r}")
            return
        gzipped = content_encoding == "gzip"
        try:
            request = decode(gunzip(body) if gzipped else body, encoding)
        except BadRequest as err:
            self.state.malformed()
            log.warning("http: 400: %s", err)
            self.answer_text(400, str(err))
            return

        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        outcome = self.state.record(entry("http", encoding, gzipped, headers, request))
        if self.state.slow > 0:
            time.sleep(self.state.slow)
        log.info("http %s%s: %d points, %s", encoding, " gzip" if gzipped else "",
                 count_points(request), outcome.kind)
        if outcome.kind == "drop":
            self.close_connection = True  # no answer; the server closes the socket
            return
        response = export_response(outcome)
        if encoding == "protobuf":
            self.answer(200, response.SerializeToString(), "application/x-protobuf")
        else:
            self.answer(200, json_format.MessageToJson(response, indent=None).encode("utf-8"),
                        "application/json")

    def refuse(self, fault, encoding):
        code = GRPC_CODE_FOR_HTTP.get(fault.status, grpc.StatusCode.UNKNOWN).value[0]
        status = RpcStatus(code=code, message=f"refused by fault injection ({fault.status})")
        extra = []
        if fault.retry_after is not None:
            extra.append(("Retry-After", str(fault.retry_after)))
        log.info("http: refused with %d", fault.status)
        if encoding == "json":
            body = json_format.MessageToJson(status, indent=None).encode("utf-8")
            self.answer(fault.status, body, "application/json", extra)
        else:
            self.answer(fault.status, status.SerializeToString(), "application/x-protobuf", extra)

    def do_GET(self):
        self.answer_text(405, "export with POST /v1/metrics")


# --------------------------------------------------------------------------
# OTLP/gRPC


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    """The generated servicer, registered by hand (see grpc_server) so the
    handler gets the message still compressed and can tell gzip from plain."""

    def __init__(self, state):
        self.state = state

    def Export(self, raw, context):
        fault = self.state.admit()
        if fault is not None:
            code = GRPC_CODE_FOR_HTTP.get(fault.status, grpc.StatusCode.UNKNOWN)
            if fault.retry_after is not None:
                status = RpcStatus(code=code.value[0], message="refused by fault injection")
                retry_info = RetryInfo()
                retry_info.retry_delay.seconds = fault.retry_after
                status.details.add().Pack(retry_info)
                context.set_trailing_metadata([("grpc-status-details-bin", status.SerializeToString())])
            log.info("grpc: refused with %s", code.name)
            context.abort(code, f"refused by fault injection ({fault.status})")

        # A protobuf message never starts with 0x1f (field 3, wire type 7 does
        # not exist), so the gzip magic tells a compressed message apart.
        gzipped = raw[:2] == b"\x1f\x8b"
        try:
            request = decode(gunzip(raw) if gzipped else raw, "protobuf")
        except BadRequest as err:
            self.state.malformed()
            log.warning("grpc: INVALID_ARGUMENT: %s", err)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

        headers = {}
        for item in context.invocation_metadata():
            name = item.key.lower()
            value = item.value
            if isinstance(value, bytes):  # "-bin" metadata
                value = base64.b64encode(value).decode("ascii")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        outcome = self.state.record(entry("grpc", "protobuf", gzipped, headers, request))
        log.info("grpc%s: %d points, %s", " gzip" if gzipped else "", count_points(request), outcome.kind)
        if outcome.kind == "drop":
            context.abort(grpc.StatusCode.UNAVAILABLE, "accept-then-drop: the answer was lost")
        return export_response(outcome)


def grpc_server(state, port):
    servicer = MetricsService(state)
    handler = grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Export": grpc.unary_unary_rpc_method_handler(
            servicer.Export,
            request_deserializer=None,  # raw bytes: see Export
            response_serializer=ExportResponse.SerializeToString,
        ),
    })
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        handlers=(handler,),
        options=[
            ("grpc.so_reuseport", 0),  # a taken port is an error, not shared
            ("grpc.per_message_decompression", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to 127.0.0.1:{port}")
    server.start()
    return server, bound


# --------------------------------------------------------------------------
# Control port


class ControlHandler(HttpBase):
    state: State

    def json_body(self):
        body = self.read_body() or b""
        if not body.strip():
            return {}
        value = json.loads(body)
        if not isinstance(value, dict):
            raise ValueError("the body must be a JSON object")
        return value

    def do_POST(self):
        try:
            args = self.json_body()
            path = self.path.split("?")[0]
            if path == "/fail":
                retry_after = args.get("retryAfter")
                self.state.set_fail(int(args.get("count", 1)), int(args.get("status", 503)),
                                    None if retry_after is None else int(retry_after),
                                    int(args.get("after", 0)))
            elif path == "/partial":
                self.state.add_partial(int(args.get("count", 1)), int(args.get("rejected", 0)),
                                       str(args.get("message", "")))
            elif path == "/accept-then-drop":
                self.state.set_drop(int(args.get("count", 1)))
            elif path == "/slow":
                self.state.slow = float(args.get("seconds", 0))
            elif path == "/reset":
                self.state.reset()
            else:
                self.answer_text(404, f"no such control: {self.path}")
                return
        except (ValueError, TypeError) as err:
            self.close_connection = True
            self.answer_text(400, f"bad control request: {err}")
            return
        log.info("control %s %s", path, json.dumps(args))
        self.answer(200, b'{"ok":true}', "application/json")

    def do_GET(self):
        if self.path.split("?")[0] == "/stats":
            self.answer(200, json.dumps(self.state.snapshot()).encode("utf-8"), "application/json")
        else:
            self.answer_text(404, f"no such control: {self.path}")


# --------------------------------------------------------------------------


def http_server(handler_base, state, port):
    handler = type(handler_base.__name__, (handler_base,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.1,), name=handler_base.__name__, daemon=True).start()
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON Lines file the requests are appended to")
    parser.add_argument("--verbose", action="store_true", help="also log every HTTP exchange")
    parser.add_argument("--values-only", action="store_true",
                        help="record each request's point values, not the request")
    args = parser.parse_args(argv)
    global VALUES_ONLY
    VALUES_ONLY = args.values_only

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s otlp_receiver %(levelname)s %(message)s",
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    state = State(args.out)
    http = http_server(ExportHandler, state, args.http_port)
    control = http_server(ControlHandler, state, args.control_port)
    grpc_srv, grpc_port = grpc_server(state, args.grpc_port)

    ports = {"http": http.server_address[1], "grpc": grpc_port, "control": control.server_address[1]}
    print(json.dumps(ports), flush=True)
    log.info("listening: %s, writing %s", ports, args.out)

    while not stop.wait(0.5):
        pass
    log.info("stopping")
    grpc_stopped = grpc_srv.stop(grace=0.5)
    for server in (http, control):
        server.shutdown()
        server.server_close()
    grpc_stopped.wait()
    state.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
