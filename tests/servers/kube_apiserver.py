#!/usr/bin/env python3
"""An in-memory Kubernetes API server for kusto-metrics' integration tests.

The real kube-rs client (hyper, plain HTTP, JSON) talks to it unmodified, so
the tests exercise the controller's real requests without a cluster. It uses
only the Python standard library.

    kube_apiserver.py [--port 0] [--history 1000] [--bookmark-interval 1.0]

It binds 127.0.0.1 (port 0: a free one), prints one line of JSON to stdout,
`{"port": N}`, and serves until SIGTERM or SIGINT (exit status 0). One log
line per request goes to stderr (and one more when a watch stream ends).

Resources (see RESOURCES; a new one is one line there)
  adx-mon.azure.com/v1   metricsexporters, summaryrules (status subresource)
  coordination.k8s.io/v1 leases
  v1                     events, configmaps, secrets, namespaces (cluster)
  events.k8s.io/v1       events
URLs: /apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]],
core ones under /api/v1. Also GET /version, /api, /api/v1, /apis,
/apis/{group}[/{version}] (legacy discovery) and /healthz, /livez, /readyz.

Verbs
  list     labelSelector (=, ==, !=, in, notin, exists, !exists, <, >),
           fieldSelector (metadata.name, metadata.namespace, a few per-kind
           fields), limit + continue (pages in namespace/name order).
  watch    watch=true|1, resourceVersion, allowWatchBookmarks, timeoutSeconds,
           sendInitialEvents=true + resourceVersionMatch=NotOlderThan
           (streaming list, ends with the k8s.io/initial-events-end bookmark).
           One JSON event per line over chunked transfer encoding. A version
           older than the kept history gets one ERROR event (410 Expired).
  get, create (generateName too), replace (PUT), delete (DeleteOptions
  preconditions and dryRun honoured), deletecollection, PUT/PATCH .../status.
  patch    merge (RFC 7386), strategic merge (treated as merge), JSON patch
           (RFC 6902: add, remove, replace, move, copy, test), and
           server-side apply (JSON bodies only, see below).
  `Accept: ...;as=PartialObjectMetadata` (kube's metadata_watcher) gets
  metadata-only objects.

Behaviour copied from the real API server because controllers depend on it
  * One global resourceVersion counter; writes that change nothing (an
    identical PUT, patch or apply) do not bump it and send no event.
  * Custom resources with a status subresource: create, PUT and PATCH of the
    main resource keep the stored status; writes to /status change only the
    status. metadata.generation starts at 1 and grows when anything outside
    metadata and status changes (and when deletion starts).
  * PUT of a custom resource needs metadata.resourceVersion (422 without); a
    stale one, on any PUT, patch or apply, is a 409 Conflict.
  * DELETE of an object with finalizers only sets deletionTimestamp; the
    object goes when an update empties its finalizers. No finalizer may be
    added while it is being deleted.
  * A watch with a selector sees an object that stops matching as DELETED
    and one that starts matching as ADDED.
  * Secrets: stringData is folded into data, type defaults to Opaque.

Simplifications (what this server does NOT do)
  * Server-side apply is approximated. On the main resource the applied
    object is merged into the stored one like a JSON merge patch (labels,
    annotations, spec, ...): fields a manager stops applying are not removed.
    On /status the applied status replaces the stored one as a whole, except
    top-level status keys that another manager applied and this one leaves
    out. Ownership is tracked per top-level status key in managedFields
    (operation Apply, subresource status); applying a key another manager
    owns with a different value is a 409 Conflict unless force=true, which
    takes the key over. Non-apply writes leave managedFields alone (the real
    server records "Update" managers).
  * Strategic merge patch is a plain merge patch: lists are replaced, not
    merged by key, and $patch directives are not understood.
  * No schema validation, defaulting, admission, authentication or RBAC;
    namespaces need not exist and deleting one deletes nothing else; no
    garbage collection of ownerReferences; propagationPolicy and grace
    periods are ignored.
  * Lists always show the current state: a continued list resumes after the
    last name it returned and reports the first page's resourceVersion, and
    resourceVersion/resourceVersionMatch on a list are ignored.
  * Watch history is one ring for all resources (--history events); a watch
    from a future resourceVersion just waits for it instead of failing.

Test control endpoints (JSON)
  POST /_test/compact         drop the watch history: watches (and continue
                              tokens) from an older version get 410 Expired.
  GET  /_test/requests        the request log, a JSON array of
                              {"method", "path", "query" (object), "contentType",
                               "userAgent", "accept", "status"}; /_test/ calls
                              are not logged.
  POST /_test/reset-requests  empty the request log.
  POST /_test/close-watches   end every open watch stream now (and close its
                              connection), as an API server restart would.
  POST /_test/forbid          {"resource": PLURAL, "namespace": NS, "user": U}:
                              from now on every request for that resource in
                              that namespace gets 403 Forbidden, worded as the
                              real server words an RBAC refusal (user U, default
                              system:serviceaccount:kusto-metrics:kusto-metrics),
                              as when no Role grants it there.
  POST /_test/fail-writes     {"resource": PLURAL, "namespace": NS, "name": N,
                              "subresource": "status" (optional), "count": C,
                              "code": 429 (default; or 409, 500, 503)}: the next
                              C writes (PUT, PATCH) of that object (or of its
                              status) are refused with that code, as an
                              overloaded or conflicting server answers, and not
                              applied. count 0 clears it. Answers
                              {"pending": C}.
  POST /_test/delay           {"resource": PLURAL, "seconds": S}: every later
                              request for that resource (watches excepted)
                              waits S seconds before it is served, as a slow
                              API server answers; 0 clears it.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import dataclasses
import json
import logging
import random
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("kube_apiserver")

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
MAX_REQUEST_LOG = 100_000


# --------------------------------------------------------------------------
# The resources served.


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    # The real server lets most built-in types be PUT without a
    # resourceVersion, but not custom resources.
    unconditional_update: bool = True
    # Custom resources (and namespaces) answer DELETE with the object, the
    # built-in types here with a Status.
    return_deleted: bool = False
    # fieldSelector fields besides metadata.name and metadata.namespace,
    # written as paths into the object.
    field_labels: tuple = ()
    # Which DNS rule metadata.name follows: "subdomain" or "label".
    name_rule: str = "subdomain"

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self):
        """How the real server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self):
        return (self.group, self.version, self.plural)


CUSTOM_RESOURCE = dict(status_subresource=True, unconditional_update=False, return_deleted=True)
CORE_EVENT_FIELDS = (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.fieldPath",
    "reason", "reportingComponent", "type",
)
EVENTS_V1_FIELDS = (
    "regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
    "reason", "reportingController", "type",
)

RESOURCES = (
    Resource("adx-mon.azure.com", "v1", "metricsexporters", "MetricsExporter", **CUSTOM_RESOURCE),
    Resource("adx-mon.azure.com", "v1", "summaryrules", "SummaryRule", **CUSTOM_RESOURCE),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource("", "v1", "events", "Event", field_labels=CORE_EVENT_FIELDS),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "secrets", "Secret", field_labels=("type",)),
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, return_deleted=True,
             field_labels=("status.phase",), name_rule="label"),
    Resource("events.k8s.io", "v1", "events", "Event", field_labels=EVENTS_V1_FIELDS),
)
BY_KEY = {res.key: res for res in RESOURCES}


# --------------------------------------------------------------------------
# Errors, as the Status objects the real server answers with.


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self):
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            status["details"] = self.details
        return status


def details(res, name, **extra):
    out = {"name": name, "kind": res.plural, **extra}
    if res.group:
        out["group"] = res.group
    return out


def not_found(res, name):
    return ApiError(404, "NotFound", f'{res.group_resource} "{name}" not found', details(res, name))


def no_such_path():
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def already_exists(res, name):
    return ApiError(409, "AlreadyExists", f'{res.group_resource} "{name}" already exists', details(res, name))


def conflict(res, name, why="the object has been modified; please apply your changes to the latest version and try again"):
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.group_resource} "{name}": {why}',
                    details(res, name))


def invalid(res, name, why):
    return ApiError(422, "Invalid", f'{res.kind}.{res.group or "core"} "{name}" is invalid: {why}',
                    {"name": name, "kind": res.kind, "group": res.group})


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def expired(message):
    return ApiError(410, "Expired", message)


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


# --------------------------------------------------------------------------
# Small JSON helpers.


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_equal(a, b):
    """JSON equality: 1 == 1.0, but True is not 1 (as it is in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def dig(obj, path):
    """The value at a dotted path, or None."""
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def meta(obj):
    return obj.get("metadata") or {}


def is_true(value):
    return str(value).lower() in ("true", "1")


def int_param(query, name):
    value = query.get(name, "")
    if value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid value {value!r}: must be an integer") from None
    if number < 0:
        raise bad_request(f"{name}: invalid value {value!r}: must be non-negative")
    return number


# --------------------------------------------------------------------------
# Selectors.

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_VALUE_RE = re.compile(_VALUE)
# (pattern, (key, operator, values) from the match), tried in order.
_REQUIREMENTS = (
    (re.compile(rf"!\s*({_KEY})"), lambda m: (m[1], "!", ())),
    (re.compile(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})"),
     lambda m: (m[1], "=" if m[2] == "==" else m[2], (m[3],))),
    (re.compile(rf"({_KEY})\s+(in|notin)\s*\(([^()]*)\)"),
     lambda m: (m[1], m[2], tuple(v.strip() for v in m[3].split(",")))),
    (re.compile(rf"({_KEY})\s*([<>])\s*(-?\d+)"), lambda m: (m[1], m[2], (int(m[3]),))),
    (re.compile(rf"({_KEY})"), lambda m: (m[1], "exists", ())),
)


def _split_outside_parens(text):
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text):
    requirements = []
    if not text.strip():
        return requirements
    for part in _split_outside_parens(text):
        for pattern, build in _REQUIREMENTS:
            match = pattern.fullmatch(part.strip())
            if match:
                requirement = build(match)
                if requirement[1] in ("in", "notin") and not all(
                        _VALUE_RE.fullmatch(v) for v in requirement[2]):
                    raise bad_request(f"unable to parse requirement: invalid value in {part.strip()!r}")
                requirements.append(requirement)
                break
        else:
            raise bad_request(f"unable to parse requirement: {part.strip()!r} in labelSelector {text!r}")
    return requirements


def label_matches(requirement, labels):
    key, op, values = requirement
    present = key in labels
    value = labels.get(key)
    if op == "=":
        return present and value == values[0]
    if op == "!=":
        return not present or value != values[0]
    if op == "in":
        return present and value in values
    if op == "notin":
        return not present or value not in values
    if op == "exists":
        return present
    if op == "!":
        return not present
    try:
        number = int(value)
    except (TypeError, ValueError):
        return False
    return number > values[0] if op == ">" else number < values[0]


def _split_unescaped(text, sep):
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


_FIELD_TERM = re.compile(r"([^=!]+?)\s*(!=|==|=)(.*)")


def parse_field_selector(text, res):
    supported = ("metadata.name", "metadata.namespace") + res.field_labels
    terms = []
    if not text.strip():
        return terms
    for part in _split_unescaped(text, ","):
        match = _FIELD_TERM.fullmatch(part.strip())
        if not match:
            raise bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        field, op, value = match[1].strip(), match[2], match[3]
        if field not in supported:
            raise bad_request(f'field label not supported: {field}')
        value = re.sub(r"\\(.)", r"\1", value)
        terms.append((field, "=" if op == "==" else op, value))
    return terms


class Selector:
    """labelSelector and fieldSelector of one list or watch, ANDed."""

    def __init__(self, query, res, name=None):
        self.labels = parse_label_selector(query.get("labelSelector", ""))
        self.fields = parse_field_selector(query.get("fieldSelector", ""), res)
        if name is not None:  # GET .../{name}?watch=true, the old way to watch one object
            self.fields.append(("metadata.name", "=", name))

    def matches(self, obj):
        labels = meta(obj).get("labels") or {}
        if not all(label_matches(r, labels) for r in self.labels):
            return False
        for field, op, value in self.fields:
            actual = dig(obj, field)
            actual = "" if actual is None else str(actual)
            if (actual == value) != (op == "="):
                return False
        return True


# --------------------------------------------------------------------------
# Patches. Both functions work on (and return) a copy.


class PatchError(Exception):
    """A patch that does not apply to the object: 422 Invalid."""


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path):
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _list_index(container, token, path, allow_end=False):
    if allow_end and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise PatchError(f"invalid array index {token!r} in {path}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds in {path}")
    return index


def _resolve(doc, tokens, path):
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_list_index(doc, token, path)]
        else:
            raise PatchError(f"path {path} does not exist")
    return doc


def _add(doc, tokens, value, path):
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, path, allow_end=True), value)
    else:
        raise PatchError(f"cannot add at {path}: the parent is not an object or array")
    return doc


def _remove(doc, tokens, path):
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_list_index(parent, last, path))
    raise PatchError(f"cannot remove {path}: it does not exist")


def json_patch(doc, operations):
    """RFC 6902 JSON patch."""
    doc = copy.deepcopy(doc)
    for op in operations:
        kind, path = op.get("op"), op.get("path")
        tokens = _pointer(path)
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            _remove(doc, tokens, path)
        elif kind == "replace":
            _resolve(doc, tokens, path)  # must exist
            if tokens:
                _remove(doc, tokens, path)
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")), path)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = copy.deepcopy(_resolve(doc, source, op.get("from")))
            if kind == "move":
                if tokens[:len(source)] == source and len(tokens) > len(source):
                    raise PatchError(f"cannot move {op.get('from')} into itself")
                _remove(doc, source, op.get("from"))
            doc = _add(doc, tokens, value, path)
        elif kind == "test":
            # Like evanphx/json-patch, which the real server uses, a missing
            # path tests equal to null; kube-runtime's finalizer helper relies
            # on that.
            try:
                actual = _resolve(doc, tokens, path)
            except PatchError:
                actual = None
            if not json_equal(actual, op.get("value")):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unexpected operation {kind!r}")
    return doc


def check_json_patch(operations):
    """Shape errors are 400 (the real server fails to decode them)."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise bad_request("a JSON patch must be an array of operation objects")
    for op in operations:
        if op.get("op") not in ("add", "remove", "replace", "move", "copy", "test"):
            raise bad_request(f"unexpected JSON patch operation {op.get('op')!r}")
        if "path" not in op or (op["op"] in ("add", "replace", "test") and "value" not in op) \
                or (op["op"] in ("move", "copy") and "from" not in op):
            raise bad_request(f"incomplete JSON patch operation {json.dumps(op)}")


# --------------------------------------------------------------------------
# Object rules shared by every write.

# Fields of metadata that only the server sets.
SERVER_METADATA = ("uid", "creationTimestamp", "generation", "resourceVersion", "managedFields",
                   "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")
# Emptied lists and maps vanish, as Go's omitempty makes them on the real server.
OMIT_EMPTY_METADATA = ("labels", "annotations", "finalizers", "ownerReferences", "managedFields")
_NAME_RULES = {
    "subdomain": (re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"), 253),
    "label": (re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"), 63),
}


def normalize_secret(obj):
    data = obj.get("data") or {}
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise bad_request(f"Secret data[{key!r}] is not valid base64") from None
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")


def normalize_namespace(obj):
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    obj.setdefault("status", {}).setdefault("phase", "Active")


NORMALIZERS = {("", "v1", "secrets"): normalize_secret, ("", "v1", "namespaces"): normalize_namespace}


def normalize(res, obj):
    obj["apiVersion"], obj["kind"] = res.api_version, res.kind
    metadata = obj["metadata"]
    for field in OMIT_EMPTY_METADATA:
        if field in metadata and not metadata[field]:
            del metadata[field]
    if res.key in NORMALIZERS:
        NORMALIZERS[res.key](obj)


def check_types(res, body, required=False):
    """The body's apiVersion and kind, when set, must be the URL's."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    if not isinstance(body.get("metadata", {}), dict):
        raise bad_request("metadata must be an object")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if required and not (api_version and kind):
        raise bad_request("apiVersion and kind must be set in an applied object")
    if api_version and api_version != res.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match "
                          f"the expected API version ({res.api_version})")
    if kind and kind != res.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")


def check_identity(route, body):
    """metadata.name and .namespace in a body, when set, must be the URL's."""
    name = meta(body).get("name")
    if route.name and name and name != route.name:
        raise bad_request(f"the name of the object ({name}) does not match the name on the URL ({route.name})")
    namespace = meta(body).get("namespace")
    if route.res.namespaced and namespace and namespace != route.namespace:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")


def spec_part(res, obj):
    """What metadata.generation counts changes of."""
    skip = {"apiVersion", "kind", "metadata"} | ({"status"} if res.status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


def without_volatile(obj):
    """The object as compared to tell a no-op write from a change."""
    out = dict(obj)
    out["metadata"] = {k: v for k, v in meta(obj).items() if k != "resourceVersion"}
    if "managedFields" in out["metadata"]:
        out["metadata"]["managedFields"] = [
            {k: v for k, v in entry.items() if k != "time"} for entry in out["metadata"]["managedFields"]]
    return out


def rebuilt(res, old, body):
    """A PUT body (or patched object) turned into the object to store: the
    server's metadata and, with a status subresource, the status are kept."""
    new = copy.deepcopy(body)
    owned = ("name", "namespace") + SERVER_METADATA
    user = {k: v for k, v in (new.get("metadata") or {}).items() if k not in owned}
    server = {k: copy.deepcopy(v) for k, v in old["metadata"].items() if k in owned}
    new["metadata"] = {**server, **user}
    if res.status_subresource:
        new.pop("status", None)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
    return new


def with_status(old, status):
    new = copy.deepcopy(old)
    new.pop("status", None)
    if status is not None:
        new["status"] = copy.deepcopy(status)
    return new


# --------------------------------------------------------------------------
# Server-side apply (the approximation the module docstring describes).


def fields_v1(value, depth):
    if not isinstance(value, dict) or depth == 0:
        return {}
    return {f"f:{k}": fields_v1(v, depth - 1) for k, v in value.items()}


def applied_part(res, body):
    """What of an applied object the main resource takes."""
    skip = {"apiVersion", "kind", "metadata"} | ({"status"} if res.status_subresource else set())
    part = {k: copy.deepcopy(v) for k, v in body.items() if k not in skip}
    user_meta = {k: copy.deepcopy(v) for k, v in meta(body).items()
                 if k not in SERVER_METADATA + ("name", "namespace", "generateName")}
    if user_meta:
        part["metadata"] = user_meta
    return part


def managed_entry(manager, res, fields, subresource=None):
    entry = {"manager": manager, "operation": "Apply", "apiVersion": res.api_version, "time": now(),
             "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    return entry


def set_managed_entry(obj, entry):
    """Replaces the entry of the same manager and subresource, or appends it;
    an entry that owns nothing is dropped, as the real server drops it."""
    entries = obj["metadata"].get("managedFields") or []
    same = lambda e: (e.get("manager"), e.get("operation"), e.get("subresource")) == (
        entry["manager"], "Apply", entry.get("subresource"))
    kept = [e for e in entries if not same(e)]
    position = next((i for i, e in enumerate(entries) if same(e)), len(kept))
    if entry["fieldsV1"]:
        kept.insert(min(position, len(kept)), entry)
    obj["metadata"]["managedFields"] = kept


def status_owners(obj):
    """{manager: set of top-level status keys} for status Apply entries."""
    owners = {}
    for entry in meta(obj).get("managedFields") or []:
        if entry.get("operation") == "Apply" and entry.get("subresource") == "status":
            keys = (entry.get("fieldsV1") or {}).get("f:status") or {}
            owners[entry["manager"]] = {k[2:] for k in keys if k.startswith("f:")}
    return owners


def apply_main(res, old, body, manager):
    part = applied_part(res, body)
    new = merge_patch(old, part)
    set_managed_entry(new, managed_entry(manager, res, fields_v1(part, 3)))
    return new


def apply_status(res, old, body, manager, force):
    applied = body.get("status") or {}
    if not isinstance(applied, dict):
        raise invalid(res, old["metadata"]["name"], "status: must be an object")
    current = old.get("status") or {}
    others = {m: keys for m, keys in status_owners(old).items() if m != manager}
    clashes = [(m, k) for m, keys in others.items() for k in sorted(keys)
               if k in applied and not json_equal(current.get(k), applied[k])]
    if clashes and not force:
        raise apply_conflict(res, old["metadata"]["name"], clashes)
    for other, key in clashes:  # force: this manager takes the keys over
        others[other].discard(key)
    kept = {k: v for k, v in current.items()
            if k not in applied and any(k in keys for keys in others.values())}
    new = with_status(old, {**kept, **copy.deepcopy(applied)} or None)
    for other in {m for m, _ in clashes}:
        keys = others[other]
        set_managed_entry(new, managed_entry(
            other, res, {"f:status": {f"f:{k}": {} for k in sorted(keys)}} if keys else {}, "status"))
    mine = {"f:status": fields_v1(applied, 1)} if applied else {}
    set_managed_entry(new, managed_entry(manager, res, mine, "status"))
    return new


def apply_conflict(res, name, clashes):
    causes = [{"reason": "FieldManagerConflict", "field": f".status.{key}",
               "message": f'conflict with "{manager}" with subresource "status"'} for manager, key in clashes]
    lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
    noun = "conflict" if len(causes) == 1 else "conflicts"
    return ApiError(409, "Conflict", f"Apply failed with {len(causes)} {noun}:\n{lines}",
                    details(res, name, causes=causes))


# --------------------------------------------------------------------------
# The store.


@dataclasses.dataclass(frozen=True)
class Event:
    rv: int
    res_key: tuple
    namespace: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict
    prev: dict | None


@dataclasses.dataclass
class Batch:
    """What a watcher gets on waking up."""
    events: list
    position: int
    closed: bool = False
    expired: ApiError | None = None


class Store:
    """Every object and the watch history, behind one condition variable.

    Stored objects are never changed in place: each write stores a new dict.
    That lets watch threads serialise them after releasing the lock.
    """

    def __init__(self, history):
        self.cond = threading.Condition()
        self.rv = 1  # so no object or list ever has the special version "0"
        self.objects = {}  # (res.key, namespace or "", name) -> object
        self.history = collections.deque(maxlen=history)
        self.floor = self.rv  # watches from below this are 410 Expired
        self.epoch = 0  # bumped by close_watches: streams of older epochs end
        self.open_watches = 0

    # ---- reading

    def get(self, route):
        with self.cond:
            return self._existing(route)

    def _existing(self, route):
        obj = self.objects.get(self._key(route.res, route.namespace, route.name))
        if obj is None:
            raise not_found(route.res, route.name)
        return obj

    @staticmethod
    def _key(res, namespace, name):
        return (res.key, namespace or "", name)

    def _matching(self, res, namespace, selector):
        found = [obj for (key, ns, _), obj in self.objects.items()
                 if key == res.key and (namespace is None or ns == namespace) and selector.matches(obj)]
        return sorted(found, key=lambda o: (meta(o).get("namespace", ""), meta(o)["name"]))

    def list(self, res, namespace, selector, limit, token):
        after, first_rv = decode_continue(token) if token else (None, None)
        with self.cond:
            if first_rv is not None and first_rv < self.floor:
                raise expired("The provided continue parameter is too old to display a consistent list "
                              "result. You can start a new list without the continue parameter.")
            items = self._matching(res, namespace, selector)
            list_rv = first_rv if first_rv is not None else self.rv
        if after is not None:
            items = [o for o in items if (meta(o).get("namespace", ""), meta(o)["name"]) > after]
        list_meta = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            last = items[limit - 1]
            list_meta["continue"] = encode_continue(
                (meta(last).get("namespace", ""), meta(last)["name"]), list_rv)
            list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return list_meta, items

    # ---- writing

    def create(self, route, body, dry_run, manager=None):
        res = route.res
        check_types(res, body)
        check_identity(route, body)
        if meta(body).get("resourceVersion"):
            raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        obj = self._new_object(route, body, manager)
        with self.cond:
            if not meta(body).get("name") and meta(body).get("generateName"):
                while self._key(res, route.namespace, obj["metadata"]["name"]) in self.objects:
                    obj["metadata"]["name"] = generated_name(meta(body)["generateName"])
            key = self._key(res, route.namespace, obj["metadata"]["name"])
            if key in self.objects:
                raise already_exists(res, obj["metadata"]["name"])
            return self._write(res, obj, "ADDED", None, dry_run)

    def _new_object(self, route, body, manager):
        res = route.res
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        for field in SERVER_METADATA:
            metadata.pop(field, None)
        name = metadata.get("name") or route.name
        if not name and metadata.get("generateName"):
            name = generated_name(metadata["generateName"])
        if not name:
            raise invalid(res, "", "metadata.name: Required value: name or generateName is required")
        pattern, longest = _NAME_RULES[res.name_rule]
        if not pattern.fullmatch(name) or len(name) > longest:
            raise invalid(res, name, f'metadata.name: Invalid value: "{name}": must be a lowercase RFC 1123 '
                                     f'{res.name_rule} of at most {longest} characters')
        metadata["name"] = name
        if res.namespaced:
            metadata["namespace"] = route.namespace
        else:
            metadata.pop("namespace", None)
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if res.status_subresource:  # the real server drops it: only /status sets status
            obj.pop("status", None)
        if manager:
            part = applied_part(res, body)
            metadata["managedFields"] = [managed_entry(manager, res, fields_v1(part, 3))]
        normalize(res, obj)
        return obj

    def replace(self, route, body, dry_run):
        res = route.res
        check_types(res, body)
        check_identity(route, body)
        with self.cond:
            old = self._existing(route)
            wanted = meta(body).get("resourceVersion")
            if not wanted and not res.unconditional_update:
                raise invalid(res, route.name, "metadata.resourceVersion: Invalid value: 0x0: "
                                               "must be specified for an update")
            self._precondition(route, old, wanted)
            new = with_status(old, body.get("status")) if route.sub else rebuilt(res, old, body)
            return self._update(route, old, new, dry_run)

    def patch(self, route, patch_fn, dry_run):
        res = route.res
        with self.cond:
            old = self._existing(route)
            try:
                patched = patch_fn(old)
            except PatchError as err:
                raise ApiError(422, "Invalid", str(err)) from None
            check_types(res, patched)
            check_identity(route, patched)
            self._precondition(route, old, meta(patched).get("resourceVersion"))
            new = with_status(old, patched.get("status")) if route.sub else rebuilt(res, old, patched)
            return self._update(route, old, new, dry_run)

    def apply(self, route, body, manager, force, dry_run):
        """Server-side apply; returns (created, object)."""
        res = route.res
        check_types(res, body, required=True)
        check_identity(route, body)
        with self.cond:
            old = self.objects.get(self._key(res, route.namespace, route.name))
            if old is None:
                if route.sub or meta(body).get("resourceVersion"):
                    raise not_found(res, route.name)
                obj = self._new_object(route, body, manager)
                return True, self._write(res, obj, "ADDED", None, dry_run)
            self._precondition(route, old, meta(body).get("resourceVersion"))
            if route.sub:
                new = apply_status(res, old, body, manager, force)
            else:
                new = apply_main(res, old, body, manager)
            return False, self._update(route, old, new, dry_run)

    def delete(self, route, options, dry_run):
        """Returns the object as deleted, or as now being deleted."""
        with self.cond:
            old = self._existing(route)
            self._delete_preconditions(route, old, options.get("preconditions") or {})
            return self._delete(route.res, old, dry_run)

    def delete_collection(self, res, namespace, selector, dry_run):
        with self.cond:
            return [self._delete(res, obj, dry_run) for obj in self._matching(res, namespace, selector)]

    def _delete(self, res, old, dry_run):
        if not meta(old).get("finalizers"):
            return self._write(res, copy.deepcopy(old), "DELETED", old, dry_run)
        if meta(old).get("deletionTimestamp"):
            return old
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0,
                               generation=new["metadata"].get("generation", 0) + 1)
        return self._write(res, new, "MODIFIED", old, dry_run)

    def _precondition(self, route, old, wanted):
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(route.res, route.name)

    def _delete_preconditions(self, route, old, preconditions):
        uid, rv = preconditions.get("uid"), preconditions.get("resourceVersion")
        if uid and uid != old["metadata"]["uid"]:
            raise conflict(route.res, route.name, f"Precondition failed: UID in precondition: {uid}, "
                                                  f"UID in object meta: {old['metadata']['uid']}")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(route.res, route.name, f"Precondition failed: ResourceVersion in precondition: "
                                                  f"{rv}, ResourceVersion in meta: {old['metadata']['resourceVersion']}")

    def _update(self, route, old, new, dry_run):
        res = route.res
        normalize(res, new)
        if not route.sub and not json_equal(spec_part(res, old), spec_part(res, new)):
            new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        if meta(old).get("deletionTimestamp"):
            added = [f for f in meta(new).get("finalizers") or [] if f not in (meta(old).get("finalizers") or [])]
            if added:
                raise invalid(res, route.name, "metadata.finalizers: Forbidden: no new finalizers can be added "
                                               f"if the object is being deleted, found new finalizers {added}")
        if json_equal(without_volatile(old), without_volatile(new)):
            return old  # a no-op write: no new resourceVersion, no event
        if meta(new).get("deletionTimestamp") and not meta(new).get("finalizers"):
            return self._write(res, new, "DELETED", old, dry_run)
        return self._write(res, new, "MODIFIED", old, dry_run)

    def _write(self, res, obj, event_type, prev, dry_run):
        """Stores (or drops) a new object, which nothing else holds yet."""
        if dry_run:
            return obj
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        namespace = obj["metadata"].get("namespace", "")
        key = self._key(res, namespace, obj["metadata"]["name"])
        if event_type == "DELETED":
            del self.objects[key]
        else:
            self.objects[key] = obj
        self._remember(Event(self.rv, res.key, namespace, event_type, obj, prev))
        self.cond.notify_all()
        return obj

    def _remember(self, event):
        if self.history.maxlen == 0:
            self.floor = event.rv
            return
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0].rv
        self.history.append(event)

    # ---- watching

    def open_watch(self, res, namespace, selector, rv, initial):
        """Returns (position, epoch, initial objects or None, expired error or None)."""
        with self.cond:
            self.open_watches += 1
            if initial:
                return self.rv, self.epoch, self._matching(res, namespace, selector), None
            if rv is None:
                return self.rv, self.epoch, None, None
            if rv < self.floor:
                return rv, self.epoch, None, self._too_old(rv)
            return rv, self.epoch, None, None

    def close_watch(self):
        with self.cond:
            self.open_watches -= 1

    def _too_old(self, rv):
        return expired(f"too old resource version: {rv} ({self.floor})")

    def wait(self, res, namespace, position, epoch, timeout):
        """Events of one resource after `position`, waiting up to `timeout`
        seconds for some write (of any resource) to happen."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv <= position and self.epoch == epoch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            if self.epoch != epoch:
                return Batch([], position, closed=True)
            if position < self.floor:
                return Batch([], position, expired=self._too_old(position))
            events = []
            for event in reversed(self.history):
                if event.rv <= position:
                    break
                if event.res_key == res.key and (namespace is None or event.namespace == namespace):
                    events.append(event)
            events.reverse()
            return Batch(events, max(position, self.rv))

    def compact(self):
        with self.cond:
            self.history.clear()
            self.floor = self.rv
            return self.rv

    def close_watches(self):
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()
            return self.open_watches


def generated_name(prefix):
    # The alphabet and length of the real server's generateName suffix.
    return prefix + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


def encode_continue(after, rv):
    raw = json.dumps({"rv": rv, "after": list(after)}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_continue(token):
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        namespace, name = value["after"]
        return (str(namespace), str(name)), int(value["rv"])
    except (ValueError, KeyError, TypeError):
        raise bad_request(f"invalid continue token {token!r}") from None


def visible_event(event, selector):
    """How a watcher with `selector` sees an event, or None: an object
    entering the selection is ADDED, one leaving it DELETED."""
    now_matches = event.type != "DELETED" and selector.matches(event.obj)
    was_matching = event.prev is not None and selector.matches(event.prev)
    if event.type == "DELETED":
        return ("DELETED", event.obj) if was_matching else None
    if now_matches:
        return ("MODIFIED" if was_matching else "ADDED", event.obj)
    if was_matching:
        # Like the real watch cache: the last matching state, at the new version.
        gone = copy.deepcopy(event.prev)
        gone["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
        return ("DELETED", gone)
    return None


# --------------------------------------------------------------------------
# Routing.


@dataclasses.dataclass(frozen=True)
class Route:
    res: Resource
    namespace: str | None  # None: all namespaces, or a cluster-scoped resource
    name: str | None  # None: the collection
    sub: str | None  # "status" or None


def parse_route(path):
    parts = [unquote(p) for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise no_such_path()
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_KEY:
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        raise no_such_path()
    res = BY_KEY.get((group, version, rest[0]))
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if res is None or (sub is not None and (sub != "status" or not res.status_subresource)):
        raise no_such_path()
    if (not res.namespaced and namespace is not None) or (res.namespaced and name and namespace is None):
        raise no_such_path()
    return Route(res, namespace, name, sub)


def version_info():
    return {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
            "compiler": "gc", "platform": "linux/amd64"}


def discovery(path, server_address):
    """A legacy discovery document, or None when the path names none."""
    groups = {}  # group -> its versions, in table order
    for res in RESOURCES:
        if res.group and res.version not in groups.setdefault(res.group, []):
            groups[res.group].append(res.version)
    if path == "/version":
        return version_info()
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [api_group(g, versions) for g, versions in groups.items()]}
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **api_group(parts[1], groups[parts[1]])}
    if parts == ["api", "v1"]:
        return resource_list("", "v1")
    if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
        return resource_list(parts[1], parts[2])
    return None


def api_group(group, versions):
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def resource_list(group, version):
    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    resources = []
    for res in RESOURCES:
        if (res.group, res.version) != (group, version):
            continue
        resources.append({"name": res.plural, "singularName": res.kind.lower(), "namespaced": res.namespaced,
                          "kind": res.kind, "verbs": verbs})
        if res.status_subresource:
            resources.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                              "kind": res.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
            "resources": resources}


def metadata_view(obj):
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


# --------------------------------------------------------------------------
# HTTP.


class RequestLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = collections.deque(maxlen=MAX_REQUEST_LOG)

    def add(self, entry):
        with self.lock:
            self.entries.append(entry)

    def snapshot(self):
        with self.lock:
            return list(self.entries)

    def clear(self):
        with self.lock:
            self.entries.clear()


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # controllers open several connections at once

    def __init__(self, address, store, bookmark_interval):
        super().__init__(address, ApiHandler)
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.requests = RequestLog()
        # (plural, namespace) -> the user RBAC refuses there (/_test/forbid).
        self.forbidden = {}
        # (plural, namespace, name, sub) -> [writes left to refuse, code]
        # (/_test/fail-writes).
        self.failing = {}
        self.failing_lock = threading.Lock()
        # plural -> seconds every request for it waits (/_test/delay).
        self.delays = {}

    def handle_error(self, request, client_address):
        # Clients drop idle keep-alive connections all the time; that is no
        # error worth a traceback.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("%s:%d went away: %s", *client_address, error)
        else:
            log.exception("serving %s:%d failed", *client_address)


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # hyper reuses connections
    disable_nagle_algorithm = True  # watch events are small writes that must not wait

    server: ApiServer

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code="-", size="-"):
        """The one log line of a request (send_response calls it), and its
        entry in the request log."""
        status = int(code) if str(code).isdigit() else 0
        note, self.note = getattr(self, "note", ""), ""
        log.info("%s %s %s%s", self.command, self.path, status, f" ({note})" if note else "")
        url = urlsplit(self.path or "")
        headers = getattr(self, "headers", None) or {}
        if not self.command or url.path.startswith("/_test/"):
            return
        self.server.requests.add({
            "method": self.command, "path": url.path,
            "query": dict(parse_qsl(url.query, keep_blank_values=True)),
            "contentType": headers.get("Content-Type"), "userAgent": headers.get("User-Agent"),
            "accept": headers.get("Accept"), "status": status,
        })

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # ---- plumbing

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
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, code, value):
        body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def json_body(self, body, kind="object"):
        try:
            value = json.loads(body or b"null")
        except ValueError as err:
            raise bad_request(f"the body is not valid JSON: {err}") from None
        if kind == "object" and not isinstance(value, dict):
            raise bad_request("the body must be a JSON object")
        return value

    def dispatch(self):
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            self.send_json(400, bad_request("bad chunked body").status())
            return
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        path = url.path.rstrip("/") or "/"
        try:
            if path.startswith("/_test/"):
                self.control(path, body)
            elif path in ("/healthz", "/livez", "/readyz"):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            elif self.command == "GET" and (doc := discovery(path, "%s:%d" % self.server.server_address)):
                self.send_json(200, doc)
            else:
                self.serve(parse_route(path), query, body)
        except ApiError as err:
            self.note = f"{err.reason}: {err.message}"
            self.send_json(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug here: answer it rather than drop the connection
            log.exception("%s %s failed", self.command, self.path)
            self.close_connection = True
            self.send_json(500, ApiError(500, "InternalError", f"{type(err).__name__}: {err}").status())

    # ---- the API

    def forbid_check(self, route, query):
        """403 as the real server answers when no Role or ClusterRole grants
        the verb (see /_test/forbid)."""
        user = self.server.forbidden.get((route.res.plural, route.namespace))
        if user is None:
            return
        if self.command == "GET" and route.name is None:
            verb = "watch" if is_true(query.get("watch", "")) else "list"
        else:
            verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if route.name else "deletecollection"}[self.command]
        what = f'{route.res.group_resource} "{route.name}"' if route.name else route.res.group_resource
        raise ApiError(403, "Forbidden",
                       f'{what} is forbidden: User "{user}" cannot {verb} resource "{route.res.plural}" '
                       f'in API group "{route.res.group}" in the namespace "{route.namespace}"',
                       {"name": route.name, "group": route.res.group, "kind": route.res.plural}
                       if route.name else {"group": route.res.group, "kind": route.res.plural})

    def fail_check(self, route):
        """A write refused by /_test/fail-writes, before anything is stored."""
        if self.command not in ("PUT", "PATCH") or route.name is None:
            return
        key = (route.res.plural, route.namespace, route.name, route.sub)
        with self.server.failing_lock:
            pending = self.server.failing.get(key)
            if not pending or pending[0] <= 0:
                return
            pending[0] -= 1
            code = pending[1]
        what = f'{route.res.group_resource} "{route.name}"' + (f" ({route.sub})" if route.sub else "")
        if code == 429:
            raise ApiError(429, "TooManyRequests", f"the server has received too many requests and has asked "
                                                   f"us to try again later: {what}", {"retryAfterSeconds": 1})
        if code == 409:
            raise conflict(route.res, route.name)
        raise ApiError(code, "InternalError" if code == 500 else "ServiceUnavailable",
                       f"injected failure writing {what}")

    def serve(self, route, query, body):
        delay = self.server.delays.get(route.res.plural)
        if delay and not is_true(query.get("watch", "")):
            time.sleep(delay)
        self.forbid_check(route, query)
        self.fail_check(route)
        store = self.server.store
        dry_run = query.get("dryRun") == "All"
        as_metadata = "as=PartialObjectMetadata" in self.headers.get("Accept", "")
        view = metadata_view if as_metadata else (lambda obj: obj)
        method = self.command
        if route.name is None and method == "GET":
            if is_true(query.get("watch", "")):
                return self.watch(route, query, view)
            return self.list(route, query, view)
        if route.name is None and method == "POST":
            if route.res.namespaced and route.namespace is None:
                raise method_not_allowed()
            return self.send_json(201, view(store.create(route, self.json_body(body), dry_run)))
        if route.name is None and method == "DELETE":
            selector = Selector(query, route.res)
            dry_run = dry_run or "All" in (self.json_body(body or b"{}").get("dryRun") or [])
            deleted = store.delete_collection(route.res, route.namespace, selector, dry_run)
            return self.send_list(route, view, {"resourceVersion": str(store.rv)}, deleted)
        if method == "GET":
            if is_true(query.get("watch", "")):
                return self.watch(route, query, view, name=route.name)
            return self.send_json(200, view(store.get(route)))
        if method == "PUT":
            return self.send_json(200, view(store.replace(route, self.json_body(body), dry_run)))
        if method == "PATCH":
            code, obj = self.patch(route, query, body, dry_run)
            return self.send_json(code, view(obj))
        if method == "DELETE" and route.sub is None:
            return self.delete(route, body, dry_run, view)
        raise method_not_allowed()

    def list(self, route, query, view):
        selector = Selector(query, route.res)
        limit = int_param(query, "limit")
        list_meta, items = self.server.store.list(route.res, route.namespace, selector, limit,
                                                  query.get("continue") or None)
        self.send_list(route, view, list_meta, items)

    def send_list(self, route, view, list_meta, items):
        if view is metadata_view:
            kind, api_version = "PartialObjectMetadataList", "meta.k8s.io/v1"
        else:
            kind, api_version = route.res.kind + "List", route.res.api_version
        self.send_json(200, {"kind": kind, "apiVersion": api_version, "metadata": list_meta,
                             "items": [view(obj) for obj in items]})

    def patch(self, route, query, body, dry_run):
        store = self.server.store
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type == "application/apply-patch+yaml":
            manager = query.get("fieldManager")
            if not manager:
                raise bad_request("PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: "
                                  "is required for apply patch")
            try:
                applied = json.loads(body)
            except ValueError:
                raise bad_request("this test server reads apply patches as JSON only "
                                  "(the YAML subset kube-rs sends)") from None
            created, obj = store.apply(route, applied, manager, is_true(query.get("force", "")), dry_run)
            return (201 if created else 200), obj
        if media_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            patch = self.json_body(body)
            return 200, store.patch(route, lambda old: merge_patch(old, patch), dry_run)
        if media_type == "application/json-patch+json":
            operations = self.json_body(body, kind="any")
            check_json_patch(operations)
            return 200, store.patch(route, lambda old: json_patch(old, operations), dry_run)
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                    f"accepted media types include: application/json-patch+json, "
                                                    f"application/merge-patch+json, application/apply-patch+yaml")

    def delete(self, route, body, dry_run, view):
        options = self.json_body(body or b"{}")
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        obj = self.server.store.delete(route, options, dry_run)
        if route.res.return_deleted or meta(obj).get("deletionTimestamp"):
            return self.send_json(200, view(obj))
        self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": details(route.res, route.name, uid=obj["metadata"]["uid"])})

    def watch(self, route, query, view, name=None):
        WatchStream(self, route, query, view, name).run()

    # ---- test control

    def control(self, path, body):
        store, requests = self.server.store, self.server.requests
        if self.command == "GET" and path == "/_test/requests":
            return self.send_json(200, requests.snapshot())
        if self.command != "POST":
            raise method_not_allowed()
        if path == "/_test/compact":
            rv = store.compact()
            self.note = f"watches from before {rv} now get 410 Expired"
            return self.send_json(200, {"resourceVersion": str(rv)})
        if path == "/_test/reset-requests":
            requests.clear()
            return self.send_json(200, {"ok": True})
        if path == "/_test/close-watches":
            closed = store.close_watches()
            self.note = f"closing {closed} watch streams"
            return self.send_json(200, {"closed": closed})
        if path == "/_test/forbid":
            spec = self.json_body(body)
            plural, namespace = spec.get("resource"), spec.get("namespace")
            if not any(res.plural == plural and res.namespaced for res in RESOURCES) or not namespace:
                raise bad_request("give a namespaced resource's plural and a namespace")
            user = spec.get("user") or "system:serviceaccount:kusto-metrics:kusto-metrics"
            self.server.forbidden[(plural, namespace)] = user
            self.note = f"{plural} in {namespace} now forbidden"
            return self.send_json(200, {"ok": True})
        if path == "/_test/fail-writes":
            spec = self.json_body(body)
            plural, namespace, name = spec.get("resource"), spec.get("namespace"), spec.get("name")
            sub, count, code = spec.get("subresource"), spec.get("count"), spec.get("code", 429)
            res = next((r for r in RESOURCES if r.plural == plural), None)
            if res is None or not name or (res.namespaced and not namespace):
                raise bad_request("give a resource's plural, a namespace (when namespaced) and a name")
            if sub not in (None, "status") or (sub and not res.status_subresource):
                raise bad_request(f"{plural} has no subresource {sub!r}")
            if not isinstance(count, int) or count < 0 or code not in (409, 429, 500, 503):
                raise bad_request("count must be an integer >= 0 and code one of 409, 429, 500, 503")
            with self.server.failing_lock:
                self.server.failing[(plural, namespace if res.namespaced else None, name, sub)] = [count, code]
            self.note = f"the next {count} writes of {plural} {namespace}/{name} {sub or ''} answer {code}"
            return self.send_json(200, {"pending": count})
        if path == "/_test/delay":
            spec = self.json_body(body)
            plural, seconds = spec.get("resource"), spec.get("seconds")
            if not any(res.plural == plural for res in RESOURCES):
                raise bad_request("give a resource's plural")
            if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 30:
                raise bad_request("seconds must be a number from 0 to 30")
            self.server.delays[plural] = seconds
            self.note = f"requests for {plural} now wait {seconds}s"
            return self.send_json(200, {"ok": True})
        raise no_such_path()


class WatchStream:
    """One watch: the initial events, then live ones and bookmarks, written
    as chunks, until timeoutSeconds, close-watches or the client leaves."""

    POLL = 0.5  # how often an idle watch checks whether its client is gone
    # A client that stops reading but keeps its socket open must not hold
    # the thread forever (close-watches could not end it either).
    SEND_TIMEOUT = 30.0

    def __init__(self, handler, route, query, view, name):
        self.handler = handler
        self.store = handler.server.store
        self.route = route
        self.view = view
        # Everything that can be refused is checked before the 200 goes out.
        self.selector = Selector(query, route.res, name)
        self.bookmarks = is_true(query.get("allowWatchBookmarks", ""))
        timeout = int_param(query, "timeoutSeconds")
        self.deadline = time.monotonic() + timeout if timeout else None
        rv = query.get("resourceVersion", "")
        send_initial = query.get("sendInitialEvents")
        if send_initial is not None and is_true(send_initial):
            if query.get("resourceVersionMatch") != "NotOlderThan":
                raise ApiError(422, "Invalid", "sendInitialEvents: Forbidden: sendInitialEvents is only "
                                               "supported with resourceVersionMatch=NotOlderThan")
            if not self.bookmarks:
                raise ApiError(422, "Invalid", "allowWatchBookmarks: Forbidden: sendInitialEvents "
                                               "requires allowWatchBookmarks=true")
        self.streaming_list = send_initial is not None and is_true(send_initial)
        self.initial = self.streaming_list or (send_initial is None and rv in ("", "0"))
        if rv in ("", "0"):
            self.start_rv = None  # with no initial events: from now on
        elif rv.isdigit():
            self.start_rv = int(rv)
        else:
            raise bad_request(f"invalid resource version {rv!r}")
        self.sent = 0

    def run(self):
        res = self.route.res
        position, self.epoch, initial, error = self.store.open_watch(
            res, self.route.namespace, self.selector, self.start_rv, self.initial)
        self.handler.connection.settimeout(self.SEND_TIMEOUT)
        try:
            self.handler.send_response(200)
            self.handler.send_header("Content-Type", "application/json")
            self.handler.send_header("Transfer-Encoding", "chunked")
            self.handler.send_header("Cache-Control", "no-cache, private")
            self.handler.end_headers()
            if error is not None:
                self.send("ERROR", error.status())
            else:
                for obj in initial or ():
                    self.send("ADDED", self.view(obj))
                if self.streaming_list:
                    self.send_bookmark(position, initial_end=True)
                self.follow(position)
            self.handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.handler.close_connection = True
        finally:
            if not self.handler.close_connection:
                self.handler.connection.settimeout(None)  # an idle keep-alive connection may wait
            self.store.close_watch()
            log.info("watch %s ended after %d events", res.group_resource, self.sent)

    def follow(self, position):
        interval = self.handler.server.bookmark_interval
        next_bookmark = time.monotonic() + interval if self.bookmarks else None
        while True:
            waits = [self.POLL] + [t - time.monotonic() for t in (next_bookmark, self.deadline) if t]
            batch = self.store.wait(self.route.res, self.route.namespace, position, self.epoch,
                                    max(0.0, min(waits)))
            if batch.closed:
                self.handler.close_connection = True  # as if the server went away
                return
            if batch.expired is not None:  # this watcher fell behind the kept history
                self.send("ERROR", batch.expired.status())
                return
            for event in batch.events:
                seen = visible_event(event, self.selector)
                if seen:
                    self.send(seen[0], self.view(seen[1]))
            position = batch.position
            if next_bookmark and time.monotonic() >= next_bookmark:
                self.send_bookmark(position)
                next_bookmark = time.monotonic() + interval
            if self.deadline and time.monotonic() >= self.deadline:
                return
            if self.client_gone():
                raise ConnectionResetError("the client closed the watch")

    def send(self, event_type, obj):
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode("utf-8") + b"\n"
        # One write per event, so that each is a chunk the client gets at once.
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.sent += 1
        log.debug("watch %s: %s %s", self.route.res.group_resource, event_type,
                  meta(obj).get("resourceVersion"))

    def send_bookmark(self, position, initial_end=False):
        if self.view is metadata_view:
            kind, api_version = "PartialObjectMetadata", "meta.k8s.io/v1"
        else:
            kind, api_version = self.route.res.kind, self.route.res.api_version
        metadata = {"resourceVersion": str(position)}
        if initial_end:
            metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
        self.send("BOOKMARK", {"kind": kind, "apiVersion": api_version, "metadata": metadata})

    def client_gone(self):
        """A closed connection reads as end-of-file without blocking."""
        conn = self.handler.connection
        try:
            readable, _, _ = select.select([conn], [], [], 0)
            return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


# --------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--history", type=int, default=1000,
                        help="watch events kept; a watch from before them gets 410 Expired")
    parser.add_argument("--bookmark-interval", type=float, default=1.0,
                        help="seconds between BOOKMARK events on watches that allow them")
    parser.add_argument("--verbose", action="store_true", help="also log every watch event and HTTP exchange")
    args = parser.parse_args(argv)
    if args.history < 0 or args.bookmark_interval <= 0:
        parser.error("--history must be >= 0 and --bookmark-interval > 0")

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s kube_apiserver %(levelname)s %(message)s",
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    store = Store(args.history)
    server = ApiServer(("127.0.0.1", args.port), store, args.bookmark_interval)
    threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True).start()

    port = server.server_address[1]
    print(json.dumps({"port": port}), flush=True)
    log.info("listening on 127.0.0.1:%d", port)

    while not stop.wait(0.5):
        pass
    log.info("stopping")
    store.close_watches()
    server.shutdown()
    server.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
