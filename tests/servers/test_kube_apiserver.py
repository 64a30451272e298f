"""Self test of kube_apiserver.py: starts it as a child process and talks to
it over HTTP the way kube-rs does.

    python3 -m unittest tests/servers/test_kube_apiserver.py -v
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from urllib.parse import quote

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kube_apiserver.py")
GROUP = "adx-mon.azure.com/v1"
USER_AGENT = "kube-apiserver-selftest/1"


def start_server(*args):
    """The server process (its stderr in proc.log) and its port."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    proc.log = log
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the server printed no port")
    return proc, json.loads(line)["port"]


def stop_server(proc):
    """Stops the server with SIGTERM; its exit status and its stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=10)
    finally:
        proc.stdout.close()
    proc.log.seek(0)
    text = proc.log.read()
    proc.log.close()
    return code, text


class Api:
    """One keep-alive connection, as hyper keeps one."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method, path, body=None, content_type="application/json", headers=None):
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if data is not None:
            sent["Content-Type"] = content_type
        self.conn.request(method, path, body=data, headers=sent)
        resp = self.conn.getresponse()
        raw = resp.read()
        assert resp.getheader("Content-Length") == str(len(raw)), "every answer has a Content-Length"
        return resp.status, (json.loads(raw) if raw and raw[:1] in b"{[" else raw)

    def ok(self, method, path, body=None, content_type="application/json", expect=(200, 201)):
        status, value = self.call(method, path, body, content_type)
        assert status in expect, f"{method} {path}: {status} {value}"
        return value

    def close(self):
        self.conn.close()


class Watch:
    def __init__(self, port, path):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", path, headers={"User-Agent": USER_AGENT})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("Transfer-Encoding") == "chunked"
        assert self.resp.getheader("Content-Type") == "application/json"

    def next(self):
        """The next event, or None when the stream has ended."""
        line = self.resp.readline()
        return json.loads(line) if line else None

    def next_change(self):
        """The next event that is not a bookmark."""
        while True:
            event = self.next()
            if event is None or event["type"] != "BOOKMARK":
                return event

    def close(self):
        self.conn.close()


def crd_path(namespace, plural="metricsexporters", name=None, sub=None):
    path = f"/apis/{GROUP}/namespaces/{namespace}/{plural}"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def exporter(name, labels=None, spec=None, **extra):
    metadata = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": GROUP, "kind": "MetricsExporter", "metadata": metadata,
            "spec": spec if spec is not None else {"interval": "1m"}, **extra}


def names(items):
    return [item["metadata"]["name"] for item in items]


class KubeApiServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server("--bookmark-interval", "0.2")

    @classmethod
    def tearDownClass(cls):
        code, log = stop_server(cls.proc)
        assert code == 0, code
        assert "Traceback" not in log, log
        assert "GET /version 200" in log, "one line per request"

    def setUp(self):
        self.api = Api(self.port)
        self.ns = self.id().rsplit(".", 1)[-1].replace("_", "-")
        self.watches = []

    def tearDown(self):
        for watch in self.watches:
            watch.close()
        self.api.close()

    def watch(self, path):
        watch = Watch(self.port, path)
        self.watches.append(watch)
        return watch

    def create(self, body, namespace=None, plural="metricsexporters"):
        return self.api.ok("POST", crd_path(namespace or self.ns, plural), body, expect=(201,))

    # ---- discovery

    def test_version_and_discovery(self):
        version = self.api.ok("GET", "/version")
        self.assertEqual((version["major"], version["gitVersion"]), ("1", "v1.30.0"))
        self.assertEqual(self.api.ok("GET", "/api")["versions"], ["v1"])
        groups = {g["name"] for g in self.api.ok("GET", "/apis")["groups"]}
        self.assertEqual(groups, {"adx-mon.azure.com", "coordination.k8s.io", "events.k8s.io"})
        self.assertEqual(self.api.ok("GET", "/apis/adx-mon.azure.com")["preferredVersion"]["version"], "v1")
        resources = {r["name"] for r in self.api.ok("GET", f"/apis/{GROUP}")["resources"]}
        self.assertEqual(resources, {"metricsexporters", "metricsexporters/status",
                                     "summaryrules", "summaryrules/status"})
        status, body = self.api.call("GET", "/apis/nope.example.com/v1/things")
        self.assertEqual((status, body["reason"], body["kind"]), (404, "NotFound", "Status"))

    # ---- create, get, list

    def test_create_get_and_errors(self):
        created = self.create(exporter("a", status={"ignored": True}))
        metadata = created["metadata"]
        self.assertEqual(metadata["namespace"], self.ns)
        self.assertEqual(metadata["generation"], 1)
        self.assertTrue(metadata["uid"] and metadata["resourceVersion"].isdigit())
        self.assertRegex(metadata["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertNotIn("status", created, "create cannot set the status of a custom resource")
        self.assertEqual(self.api.ok("GET", crd_path(self.ns, name="a")), created)

        status, body = self.api.call("POST", crd_path(self.ns), exporter("a"))
        self.assertEqual((status, body["reason"], body["code"]), (409, "AlreadyExists", 409))
        self.assertEqual(body["details"], {"name": "a", "kind": "metricsexporters", "group": "adx-mon.azure.com"})
        status, body = self.api.call("GET", crd_path(self.ns, name="missing"))
        self.assertEqual((status, body["reason"], body["status"]), (404, "NotFound", "Failure"))
        self.assertEqual(body["message"], 'metricsexporters.adx-mon.azure.com "missing" not found')

        wrong_kind = {**exporter("b"), "kind": "SummaryRule"}
        self.assertEqual(self.api.call("POST", crd_path(self.ns), wrong_kind)[0], 400)
        wrong_version = {**exporter("b"), "apiVersion": "adx-mon.azure.com/v2"}
        self.assertEqual(self.api.call("POST", crd_path(self.ns), wrong_version)[0], 400)
        self.assertEqual(self.api.call("POST", crd_path(self.ns), exporter("Bad_Name"))[0], 422)

        generated = self.create({"metadata": {"generateName": "gen-"}, "spec": {}})
        self.assertRegex(generated["metadata"]["name"], r"^gen-[a-z0-9]{5}$")
        self.assertEqual(generated["kind"], "MetricsExporter")

    def test_list_selectors_and_paging(self):
        for i, (app, tier) in enumerate([("web", "a"), ("web", "b"), ("db", "a"), ("db", None), ("cache", "c")]):
            labels = {"app": app, **({"tier": tier} if tier else {})}
            self.create(exporter(f"obj-{i}", labels))
        self.create(exporter("elsewhere", {"app": "web"}), namespace=self.ns + "-other")

        def listed(selector="", field="", namespace=self.ns):
            path = crd_path(namespace) + f"?labelSelector={quote(selector)}&fieldSelector={quote(field)}"
            answer = self.api.ok("GET", path)
            self.assertEqual((answer["kind"], answer["apiVersion"]), ("MetricsExporterList", GROUP))
            self.assertTrue(answer["metadata"]["resourceVersion"].isdigit())
            for item in answer["items"]:
                self.assertEqual((item["kind"], item["apiVersion"]), ("MetricsExporter", GROUP))
            return names(answer["items"])

        self.assertEqual(listed(), ["obj-0", "obj-1", "obj-2", "obj-3", "obj-4"])
        self.assertEqual(listed("app=web"), ["obj-0", "obj-1"])
        self.assertEqual(listed("app==db,tier=a"), ["obj-2"])
        self.assertEqual(listed("app!=web"), ["obj-2", "obj-3", "obj-4"])
        self.assertEqual(listed("app in (web, cache)"), ["obj-0", "obj-1", "obj-4"])
        self.assertEqual(listed("tier notin (a)"), ["obj-1", "obj-3", "obj-4"])
        self.assertEqual(listed("tier"), ["obj-0", "obj-1", "obj-2", "obj-4"])
        self.assertEqual(listed("!tier"), ["obj-3"])
        self.assertEqual(listed("app in (web,db),tier!=a"), ["obj-1", "obj-3"])
        self.assertEqual(listed(field="metadata.name=obj-3"), ["obj-3"])
        self.assertEqual(listed(field="metadata.name!=obj-3,metadata.namespace=" + self.ns),
                         ["obj-0", "obj-1", "obj-2", "obj-4"])
        all_namespaces = self.api.ok("GET", f"/apis/{GROUP}/metricsexporters?labelSelector=app%3Dweb")
        self.assertEqual(sorted(names(all_namespaces["items"])), ["elsewhere", "obj-0", "obj-1"])
        self.assertEqual(self.api.call("GET", crd_path(self.ns) + "?labelSelector=a%20in%20(")[0], 400)
        self.assertEqual(self.api.call("GET", crd_path(self.ns) + "?fieldSelector=spec.x%3D1")[0], 400)

        pages, token, versions = [], "", set()
        while True:
            path = crd_path(self.ns) + "?&limit=2&resourceVersion=0&resourceVersionMatch=NotOlderThan"
            page = self.api.ok("GET", path + (f"&continue={quote(token)}" if token else ""))
            pages.append(names(page["items"]))
            versions.add(page["metadata"]["resourceVersion"])
            token = page["metadata"].get("continue")
            if not token:
                break
            self.assertEqual(page["metadata"]["remainingItemCount"], 5 - 2 * len(pages))
        self.assertEqual(pages, [["obj-0", "obj-1"], ["obj-2", "obj-3"], ["obj-4"]])
        self.assertEqual(len(versions), 1, "every page reports the first page's version")
        self.assertEqual(self.api.call("GET", crd_path(self.ns) + "?limit=2&continue=garbage")[0], 400)

    def test_core_resources(self):
        cm = self.api.ok("POST", f"/api/v1/namespaces/{self.ns}/configmaps",
                         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}})
        self.assertEqual(cm["data"], {"k": "v"})
        cm["data"]["k"] = "w"
        del cm["metadata"]["resourceVersion"]  # built-in types allow an unconditional PUT
        self.assertEqual(self.api.ok("PUT", f"/api/v1/namespaces/{self.ns}/configmaps/cm", cm)["data"], {"k": "w"})
        status, deleted = self.api.call("DELETE", f"/api/v1/namespaces/{self.ns}/configmaps/cm")
        self.assertEqual((status, deleted["kind"], deleted["status"]), (200, "Status", "Success"))

        secret = self.api.ok("POST", f"/api/v1/namespaces/{self.ns}/secrets",
                             {"metadata": {"name": "s"}, "stringData": {"token": "hi"}})
        self.assertEqual((secret["data"], secret["type"]), ({"token": "aGk="}, "Opaque"))
        self.assertNotIn("stringData", secret)

        namespace = self.api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": self.ns}})
        self.assertNotIn("namespace", namespace["metadata"])
        self.assertEqual(namespace["metadata"]["labels"]["kubernetes.io/metadata.name"], self.ns)
        self.assertEqual(self.api.ok("GET", f"/api/v1/namespaces/{self.ns}")["metadata"]["uid"],
                         namespace["metadata"]["uid"])

        lease = self.api.ok("POST", f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases",
                            {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "me"}})
        self.assertEqual(lease["apiVersion"], "coordination.k8s.io/v1")
        event = self.api.ok("POST", f"/apis/events.k8s.io/v1/namespaces/{self.ns}/events",
                            {"metadata": {"name": "e1"}, "reason": "Exported", "regarding": {"name": "x"}})
        self.assertEqual(event["kind"], "Event")
        self.api.ok("PATCH", f"/apis/events.k8s.io/v1/namespaces/{self.ns}/events/e1",
                    {"series": {"count": 2}}, "application/merge-patch+json")
        listed = self.api.ok("GET", f"/apis/events.k8s.io/v1/namespaces/{self.ns}/events"
                                    "?fieldSelector=regarding.name%3Dx")
        self.assertEqual([i["series"]["count"] for i in listed["items"]], [2])

    def test_forbid_answers_403_as_rbac_does(self):
        other = self.ns + "-open"
        for ns in (self.ns, other):
            self.api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps",
                        {"metadata": {"name": "cm"}, "data": {"k": "v"}})
        self.api.ok("POST", "/_test/forbid", {"resource": "configmaps", "namespace": self.ns})
        status, err = self.api.call("GET", f"/api/v1/namespaces/{self.ns}/configmaps/cm")
        self.assertEqual((status, err["reason"], err["code"]), (403, "Forbidden", 403))
        self.assertEqual(err["message"],
                         'configmaps "cm" is forbidden: User "system:serviceaccount:kusto-metrics:kusto-metrics" '
                         f'cannot get resource "configmaps" in API group "" in the namespace "{self.ns}"')
        status, err = self.api.call("GET", f"/api/v1/namespaces/{self.ns}/configmaps")
        self.assertIn("cannot list resource", err["message"])
        self.assertEqual(self.api.ok("GET", f"/api/v1/namespaces/{other}/configmaps/cm")["data"], {"k": "v"})
        status, _ = self.api.call("POST", "/_test/forbid", {"resource": "nothing", "namespace": "x"})
        self.assertEqual(status, 400)

    # ---- watch

    def test_watch_from_version_gets_later_events_in_order_and_bookmarks(self):
        rv = self.create(exporter("w"))["metadata"]["resourceVersion"]
        watch = self.watch(crd_path(self.ns) + f"?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true"
                                               f"&resourceVersion={rv}")
        path = crd_path(self.ns, name="w")
        self.api.ok("PATCH", path, {"spec": {"interval": "2m"}}, "application/merge-patch+json")
        self.create(exporter("w2"))
        self.create(exporter("other-namespace"), namespace=self.ns + "-x")
        self.api.ok("DELETE", path)

        seen = [watch.next_change() for _ in range(3)]
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in seen],
                         [("MODIFIED", "w"), ("ADDED", "w2"), ("DELETED", "w")])
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
        self.assertEqual(versions, sorted(versions))
        self.assertGreater(versions[0], int(rv))
        self.assertEqual(seen[0]["object"]["kind"], "MetricsExporter")

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            event = watch.next()
            if event["type"] == "BOOKMARK":
                break
        self.assertEqual(event["object"]["kind"], "MetricsExporter")
        self.assertEqual(event["object"]["apiVersion"], GROUP)
        self.assertGreaterEqual(int(event["object"]["metadata"]["resourceVersion"]), versions[-1])

    def test_watch_without_version_starts_with_added_events(self):
        self.create(exporter("one"))
        self.create(exporter("two"))
        watch = self.watch(crd_path(self.ns) + "?watch=1")
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in (watch.next(), watch.next())],
                         [("ADDED", "one"), ("ADDED", "two")])
        self.create(exporter("three"))
        self.assertEqual(watch.next()["object"]["metadata"]["name"], "three")

    def test_streaming_list_ends_initial_events_with_a_bookmark(self):
        self.create(exporter("s1"))
        watch = self.watch(crd_path(self.ns) + "?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true"
                                               "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                                               "&resourceVersion=0")
        self.assertEqual(watch.next()["type"], "ADDED")
        bookmark = watch.next()
        self.assertEqual(bookmark["type"], "BOOKMARK")
        self.assertEqual(bookmark["object"]["metadata"]["annotations"], {"k8s.io/initial-events-end": "true"})
        status, _ = self.api.call("GET", crd_path(self.ns) + "?watch=true&sendInitialEvents=true")
        self.assertEqual(status, 422)

    def test_watch_selector_sees_objects_leave_and_enter(self):
        created = self.create(exporter("sel", {"app": "web"}))
        watch = self.watch(crd_path(self.ns) + "?watch=true&labelSelector=app%3Dweb"
                                               f"&resourceVersion={created['metadata']['resourceVersion']}")
        path = crd_path(self.ns, name="sel")
        self.api.ok("PATCH", path, {"metadata": {"labels": {"app": "db"}}}, "application/merge-patch+json")
        self.api.ok("PATCH", path, {"spec": {"interval": "9m"}}, "application/merge-patch+json")  # unseen
        self.api.ok("PATCH", path, {"metadata": {"labels": {"app": "web"}}}, "application/merge-patch+json")
        left, entered = watch.next_change(), watch.next_change()
        self.assertEqual(left["type"], "DELETED")
        self.assertEqual(left["object"]["metadata"]["labels"], {"app": "web"}, "the last matching state")
        self.assertEqual(entered["type"], "ADDED")
        self.assertEqual(entered["object"]["spec"], {"interval": "9m"})
        self.assertGreater(int(entered["object"]["metadata"]["resourceVersion"]),
                           int(left["object"]["metadata"]["resourceVersion"]))

    def test_watch_from_compacted_version_is_expired(self):
        rv = self.create(exporter("c"))["metadata"]["resourceVersion"]
        self.api.ok("PATCH", crd_path(self.ns, name="c"), {"spec": {"x": 1}}, "application/merge-patch+json")
        compacted = self.api.ok("POST", "/_test/compact")["resourceVersion"]
        watch = self.watch(crd_path(self.ns) + f"?watch=true&resourceVersion={rv}")
        error = watch.next()
        self.assertEqual(error["type"], "ERROR")
        self.assertEqual((error["object"]["code"], error["object"]["reason"]), (410, "Expired"))
        self.assertEqual(error["object"]["message"], f"too old resource version: {rv} ({compacted})")
        self.assertIsNone(watch.next(), "the stream ends after the error")

        fresh = self.watch(crd_path(self.ns) + f"?watch=true&resourceVersion={compacted}")
        self.api.ok("DELETE", crd_path(self.ns, name="c"))
        self.assertEqual(fresh.next()["type"], "DELETED")

    def test_close_watches_and_timeout_end_streams(self):
        first = self.watch(crd_path(self.ns) + "?watch=true&allowWatchBookmarks=true")
        second = self.watch(f"/apis/{GROUP}/summaryrules?watch=true")
        time.sleep(0.2)
        self.assertGreaterEqual(self.api.ok("POST", "/_test/close-watches")["closed"], 2)
        self.assertIsNone(first.next_change())
        self.assertIsNone(second.next_change())

        started = time.monotonic()
        timed = self.watch(crd_path(self.ns) + "?watch=true&timeoutSeconds=1")
        self.assertIsNone(timed.next())
        self.assertLess(time.monotonic() - started, 3)

    def test_metadata_only_watch_and_get(self):
        self.create(exporter("m", spec={"secret": "x"}))
        headers = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}
        status, obj = self.api.call("GET", crd_path(self.ns, name="m"), headers=headers)
        self.assertEqual((status, obj["kind"], set(obj)), (200, "PartialObjectMetadata",
                                                           {"kind", "apiVersion", "metadata"}))
        status, listed = self.api.call("GET", crd_path(self.ns), headers=headers)
        self.assertEqual(listed["kind"], "PartialObjectMetadataList")
        self.assertEqual(set(listed["items"][0]), {"kind", "apiVersion", "metadata"})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", crd_path(self.ns) + "?watch=true", headers=headers)
        event = json.loads(conn.getresponse().readline())
        conn.close()
        self.assertEqual((event["type"], event["object"]["kind"]), ("ADDED", "PartialObjectMetadata"))
        self.assertNotIn("spec", event["object"])

    def test_each_watch_event_is_one_chunk_on_a_kept_alive_connection(self):
        self.create(exporter("raw"))
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            request = (f"GET {crd_path(self.ns)}?watch=true&timeoutSeconds=1 HTTP/1.1\r\n"
                       f"Host: x\r\n\r\n")
            sock.sendall(request.encode())
            head = []
            while (line := reader.readline()) not in (b"\r\n", b""):
                head.append(line.decode().strip().lower())
            self.assertEqual(head[0], "http/1.1 200 ok")
            self.assertIn("transfer-encoding: chunked", head)
            size = int(reader.readline().strip(), 16)
            chunk = reader.read(size)
            self.assertTrue(chunk.endswith(b"\n") and chunk.count(b"\n") == 1)
            self.assertEqual(json.loads(chunk)["object"]["metadata"]["name"], "raw")
            self.assertEqual(reader.readline(), b"\r\n")
            self.assertEqual(reader.readline(), b"0\r\n", "the timeout ends the stream cleanly")
            self.assertEqual(reader.readline(), b"\r\n")
            sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection again
            self.assertEqual(reader.readline(), b"HTTP/1.1 200 OK\r\n")

    # ---- updates

    def test_put_conflicts_on_stale_resource_version(self):
        created = self.create(exporter("p"))
        path = crd_path(self.ns, name="p")
        updated = self.api.ok("PUT", path, {**created, "spec": {"interval": "5m"}})
        self.assertEqual(updated["metadata"]["generation"], 2)
        status, body = self.api.call("PUT", path, {**created, "spec": {"interval": "6m"}})
        self.assertEqual((status, body["reason"]), (409, "Conflict"))
        self.assertIn("the object has been modified", body["message"])
        unconditional = {**updated, "metadata": {"name": "p"}}
        self.assertEqual(self.api.call("PUT", path, unconditional)[0], 422, "custom resources need a version")
        self.assertEqual(self.api.call("PUT", path, {**updated, "metadata": {**updated["metadata"],
                                                                             "name": "q"}})[0], 400)
        again = self.api.ok("PUT", path, updated)
        self.assertEqual(again["metadata"]["resourceVersion"], updated["metadata"]["resourceVersion"],
                         "an update that changes nothing is not a write")

    def test_status_subresource_and_generation(self):
        created = self.create(exporter("g"))
        path = crd_path(self.ns, name="g")
        with_status = self.api.ok("PUT", path + "/status", {**created, "spec": {"ignored": 1},
                                                            "status": {"phase": "Ready"}})
        self.assertEqual(with_status["status"], {"phase": "Ready"})
        self.assertEqual(with_status["spec"], created["spec"], "/status changes only the status")
        self.assertEqual(with_status["metadata"]["generation"], 1)
        patched = self.api.ok("PATCH", path + "/status", {"status": {"phase": "Busy"}},
                              "application/merge-patch+json")
        self.assertEqual((patched["status"], patched["metadata"]["generation"]), ({"phase": "Busy"}, 1))

        main = self.api.ok("PUT", path, {**patched, "status": {"phase": "Lost"}})
        self.assertEqual(main["status"], {"phase": "Busy"}, "the main resource keeps the stored status")
        self.assertEqual(main["metadata"]["generation"], 1)
        labelled = self.api.ok("PATCH", path, {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json")
        self.assertEqual(labelled["metadata"]["generation"], 1, "metadata is not counted")
        changed = self.api.ok("PATCH", path, {"spec": {"interval": "7m"}}, "application/merge-patch+json")
        self.assertEqual(changed["metadata"]["generation"], 2)
        self.assertEqual(self.api.call("GET", f"/api/v1/namespaces/{self.ns}/configmaps/x/status")[0], 404)

    def test_merge_patch(self):
        self.create(exporter("mp", {"a": "1", "b": "2"}, {"interval": "1m", "nested": {"x": 1, "y": 2}}))
        patched = self.api.ok("PATCH", crd_path(self.ns, name="mp"),
                              {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"nested": {"y": None}}},
                              "application/merge-patch+json")
        self.assertEqual(patched["metadata"]["labels"], {"b": "2", "c": "3"})
        self.assertEqual(patched["spec"], {"interval": "1m", "nested": {"x": 1}})
        strategic = self.api.ok("PATCH", crd_path(self.ns, name="mp"), {"spec": {"interval": "3m"}},
                                "application/strategic-merge-patch+json")
        self.assertEqual(strategic["spec"]["interval"], "3m")
        stale = {"metadata": {"resourceVersion": patched["metadata"]["resourceVersion"]}, "spec": {"z": 1}}
        self.assertEqual(self.api.call("PATCH", crd_path(self.ns, name="mp"), stale,
                                       "application/merge-patch+json")[0], 409)
        self.assertEqual(self.api.call("PATCH", crd_path(self.ns, name="mp"), {}, "text/plain")[0], 415)
        self.assertEqual(self.api.call("PATCH", crd_path(self.ns, name="none"), {},
                                       "application/merge-patch+json")[0], 404)

    def test_json_patch_and_finalizers(self):
        self.create(exporter("jp"))
        path = crd_path(self.ns, name="jp")
        add = [{"op": "test", "path": "/metadata/finalizers", "value": None},
               {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/cleanup"]},
               {"op": "replace", "path": "/spec/interval", "value": "2m"},
               {"op": "add", "path": "/spec/list", "value": [1, 3]},
               {"op": "add", "path": "/spec/list/1", "value": 2},
               {"op": "copy", "from": "/spec/interval", "path": "/spec/copied"},
               {"op": "move", "from": "/spec/copied", "path": "/spec/moved"},
               {"op": "remove", "path": "/spec/list/0"}]
        patched = self.api.ok("PATCH", path, add, "application/json-patch+json")
        self.assertEqual(patched["metadata"]["finalizers"], ["example.com/cleanup"])
        self.assertEqual(patched["spec"], {"interval": "2m", "list": [2, 3], "moved": "2m"})
        status, body = self.api.call("PATCH", path, [{"op": "test", "path": "/spec/interval", "value": "9m"}],
                                     "application/json-patch+json")
        self.assertEqual((status, body["reason"]), (422, "Invalid"))
        self.assertEqual(self.api.call("PATCH", path, {"op": "add"}, "application/json-patch+json")[0], 400)

        rv = patched["metadata"]["resourceVersion"]
        deleting = self.api.ok("DELETE", path)
        self.assertIn("deletionTimestamp", deleting["metadata"], "a finalizer holds the object back")
        self.assertEqual(self.api.ok("GET", path)["metadata"]["deletionTimestamp"],
                         deleting["metadata"]["deletionTimestamp"])
        status, _ = self.api.call("PATCH", path, {"metadata": {"finalizers": ["example.com/cleanup", "more"]}},
                                  "application/merge-patch+json")
        self.assertEqual(status, 422, "no new finalizers while deleting")
        watch = self.watch(crd_path(self.ns) + f"?watch=true&resourceVersion={rv}")
        self.api.ok("PATCH", path, [{"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/cleanup"},
                                    {"op": "remove", "path": "/metadata/finalizers/0"}],
                    "application/json-patch+json")
        self.assertEqual(self.api.call("GET", path)[0], 404)
        self.assertEqual([watch.next()["type"], watch.next()["type"]], ["MODIFIED", "DELETED"])

    def test_delete_preconditions_and_dry_run(self):
        created = self.create(exporter("d"))
        path = crd_path(self.ns, name="d")
        self.assertEqual(self.api.call("DELETE", path, {"preconditions": {"resourceVersion": "1"}})[0], 409)
        self.api.ok("DELETE", path, {"dryRun": ["All"]})
        self.assertEqual(self.api.call("GET", path)[0], 200)
        deleted = self.api.ok("DELETE", path, {"preconditions": {"uid": created["metadata"]["uid"]}})
        self.assertEqual(deleted["kind"], "MetricsExporter", "custom resources answer with the object")
        self.assertEqual(self.api.call("DELETE", path)[0], 404)

    # ---- server-side apply

    def test_server_side_apply(self):
        path = crd_path(self.ns, name="ssa")
        apply = "application/apply-patch+yaml"
        body = exporter("ssa", {"app": "x"}, {"interval": "1m"}, status={"dropped": True})
        self.assertEqual(self.api.call("PATCH", path, body, apply)[0], 400, "fieldManager is required")
        self.assertEqual(self.api.call("PATCH", path + "/status?fieldManager=a", body, apply)[0], 404)
        self.assertEqual(self.api.call("PATCH", path + "?fieldManager=a", {"metadata": {"name": "ssa"}},
                                       apply)[0], 400, "apiVersion and kind are required")

        status, created = self.api.call("PATCH", path + "?fieldManager=ctl&force=true", body, apply)
        self.assertEqual(status, 201)
        self.assertNotIn("status", created)
        self.assertEqual(created["metadata"]["generation"], 1)
        self.assertEqual(created["metadata"]["managedFields"][0]["manager"], "ctl")

        merged = self.api.ok("PATCH", path + "?fieldManager=ctl",
                             exporter("ssa", {"team": "y"}, {"extra": 1}), apply)
        self.assertEqual(merged["metadata"]["labels"], {"app": "x", "team": "y"})
        self.assertEqual(merged["spec"], {"interval": "1m", "extra": 1})
        self.assertEqual(merged["metadata"]["generation"], 2)

        def apply_status(manager, status, force=False):
            query = f"?fieldManager={manager}" + ("&force=true" if force else "")
            return self.api.call("PATCH", path + "/status" + query,
                                 {"apiVersion": GROUP, "kind": "MetricsExporter", "metadata": {"name": "ssa"},
                                  "status": status}, apply)

        status, first = apply_status("a", {"phase": "Ready", "count": 1})
        self.assertEqual((status, first["status"]), (200, {"phase": "Ready", "count": 1}))
        status, second = apply_status("b", {"lastError": "boom"})
        self.assertEqual(second["status"], {"phase": "Ready", "count": 1, "lastError": "boom"})
        status, third = apply_status("a", {"phase": "Busy"})
        self.assertEqual(third["status"], {"phase": "Busy", "lastError": "boom"},
                         "a's dropped key goes, b's key stays")
        self.assertEqual(third["metadata"]["generation"], 2, "status never bumps generation")
        owners = {e["manager"]: e["fieldsV1"] for e in third["metadata"]["managedFields"]
                  if e.get("subresource") == "status"}
        self.assertEqual(owners, {"a": {"f:status": {"f:phase": {}}}, "b": {"f:status": {"f:lastError": {}}}})

        status, clash = apply_status("b", {"lastError": "boom", "phase": "Broken"})
        self.assertEqual((status, clash["reason"]), (409, "Conflict"))
        self.assertIn('conflict with "a"', clash["message"])
        status, same = apply_status("b", {"lastError": "boom", "phase": "Busy"})
        self.assertEqual(status, 200, "applying an owned key with the same value is no conflict")
        status, forced = apply_status("b", {"phase": "Broken"}, force=True)
        self.assertEqual((status, forced["status"]), (200, {"phase": "Broken"}))
        owners = {e["manager"] for e in forced["metadata"]["managedFields"] if e.get("subresource") == "status"}
        self.assertEqual(owners, {"b"}, "a owned nothing more, so its entry went")

        again = apply_status("b", {"phase": "Broken"})[1]
        self.assertEqual(again["metadata"]["resourceVersion"], forced["metadata"]["resourceVersion"],
                         "an apply that changes nothing is not a write")
        stale = {**exporter("ssa"), "metadata": {"name": "ssa", "resourceVersion": "1"}}
        self.assertEqual(self.api.call("PATCH", path + "?fieldManager=ctl", stale, apply)[0], 409)
        self.assertEqual(self.api.call("PATCH", path + "?fieldManager=ctl", b"spec: {}", apply)[0], 400)

    def test_status_apply_with_a_stale_resource_version_is_refused(self):
        path = crd_path(self.ns, name="fenced")
        created = self.create(exporter("fenced"))
        apply = "application/apply-patch+yaml"

        def apply_status(rv, status):
            body = {"apiVersion": GROUP, "kind": "MetricsExporter",
                    "metadata": {"name": "fenced", "resourceVersion": rv}, "status": status}
            return self.api.call("PATCH", path + "/status?fieldManager=m&force=true", body, apply)

        status, first = apply_status(created["metadata"]["resourceVersion"], {"holder": "a", "n": 1})
        self.assertEqual((status, first["status"]), (200, {"holder": "a", "n": 1}))
        status, stale = apply_status(created["metadata"]["resourceVersion"], {"holder": "b", "n": 0})
        self.assertEqual((status, stale["reason"]), (409, "Conflict"), "a stale version is refused")
        self.assertEqual(self.api.ok("GET", path)["status"], {"holder": "a", "n": 1}, "and not applied")
        status, second = apply_status(first["metadata"]["resourceVersion"], {"holder": "a", "n": 2})
        self.assertEqual((status, second["status"]["n"]), (200, 2))

    def test_fail_writes_refuses_the_next_writes_of_one_object(self):
        path = crd_path(self.ns, name="busy")
        self.create(exporter("busy"))
        self.create(exporter("other"))
        body = {"resource": "metricsexporters", "namespace": self.ns, "name": "busy", "subresource": "status",
                "count": 2}
        self.assertEqual(self.api.ok("POST", "/_test/fail-writes", body), {"pending": 2})
        merge = "application/merge-patch+json"
        for _ in range(2):
            status, refused = self.api.call("PATCH", path + "/status", {"status": {"n": 1}}, merge)
            self.assertEqual((status, refused["reason"]), (429, "TooManyRequests"))
        self.assertNotIn("status", self.api.ok("GET", path), "refused writes are not applied")
        self.api.ok("PATCH", crd_path(self.ns, name="other") + "/status", {"status": {"n": 1}}, merge)
        self.api.ok("PATCH", path, {"metadata": {"labels": {"a": "b"}}}, merge)
        self.assertEqual(self.api.ok("PATCH", path + "/status", {"status": {"n": 3}}, merge)["status"], {"n": 3})

        self.api.ok("POST", "/_test/fail-writes", {**body, "subresource": None, "count": 1, "code": 503})
        self.assertEqual(self.api.call("PUT", path, self.api.ok("GET", path))[0], 503)
        self.api.ok("PUT", path, self.api.ok("GET", path))
        for bad in ({**body, "code": 418}, {**body, "count": -1}, {**body, "name": None},
                    {**body, "resource": "configmaps"}):
            self.assertEqual(self.api.call("POST", "/_test/fail-writes", bad)[0], 400, bad)

    def test_delay_slows_every_request_for_one_resource(self):
        self.api.ok("POST", "/_test/delay", {"resource": "leases", "seconds": 0.3})
        try:
            leases = f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases"
            started = time.monotonic()
            self.api.ok("GET", leases)
            self.assertGreaterEqual(time.monotonic() - started, 0.3)
            started = time.monotonic()
            self.api.ok("GET", crd_path(self.ns))
            self.assertLess(time.monotonic() - started, 0.3, "other resources answer at once")
            self.assertEqual(self.api.call("POST", "/_test/delay", {"resource": "leases", "seconds": 31})[0], 400)
        finally:
            self.api.ok("POST", "/_test/delay", {"resource": "leases", "seconds": 0})
        started = time.monotonic()
        self.api.ok("GET", f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases")
        self.assertLess(time.monotonic() - started, 0.3)

    # ---- test control

    def test_request_log(self):
        self.api.ok("POST", "/_test/reset-requests")
        self.api.call("GET", crd_path(self.ns, name="nothing") + "?x=1")
        log = self.api.ok("GET", "/_test/requests")
        self.assertEqual(log, [{"method": "GET", "path": crd_path(self.ns, name="nothing"), "query": {"x": "1"},
                                "contentType": None, "userAgent": USER_AGENT, "accept": "application/json",
                                "status": 404}])


class HistoryAndShutdownTest(unittest.TestCase):
    def test_small_history_expires_old_versions_and_sigterm_exits_cleanly(self):
        proc, port = start_server("--history", "2")
        api = Api(port)
        try:
            path = crd_path("h")
            first = api.ok("POST", path, exporter("h0"))["metadata"]["resourceVersion"]
            for i in range(1, 4):
                api.ok("POST", path, exporter(f"h{i}"))
            watch = Watch(port, path + f"?watch=true&resourceVersion={first}")
            self.assertEqual(watch.next()["object"]["code"], 410)
            watch.close()
        finally:
            api.close()
            code, log = stop_server(proc)
        self.assertEqual(code, 0)
        self.assertNotIn("Traceback", log)
        self.assertIn("stopped", log)


if __name__ == "__main__":
    unittest.main()
