#!/usr/bin/env python3
"""Push a WebAssembly component to an OCI registry with a real client.

The integration tests pull guests from a registry the way teams publish them,
so the artifact must come from an OCI client that shares no code with
kusto-metrics: oras-py (`oras` on PyPI). It writes the CNCF Wasm OCI artifact
layout, as `wkg oci push` does:

    image manifest  application/vnd.oci.image.manifest.v1+json, schemaVersion 2
    config          application/vnd.wasm.config.v0+json, a JSON document
                    {"created", "author", "architecture": "wasm",
                     "os": "wasip2", "layerDigests", "component"}
    layers          exactly one: the .wasm bytes, application/wasm

    oci_push.py --registry HOST:PORT --repo team/guest --tag 1.0
                --wasm guest.wasm [--insecure] [--username U --password P]
                [--config-media-type T] [--layer-media-type T]
                [--extra-layer PATH:MEDIATYPE ...]

`--insecure` speaks plain HTTP. The media type options and `--extra-layer`
let tests build artifacts that break the layout on purpose.

oras's high-level `push()` adds a title annotation to every layer, which wkg
does not, so the blobs and manifest go through its lower-level
`Registry.upload_blob` and `Registry.upload_manifest`; oras still does the
HTTP and the authentication (its `basic` backend for a registry that asks
for Basic auth, such as an htpasswd one, its `token` backend otherwise).

Once pushed, the manifest is fetched back with a plain GET and one line of
JSON goes to stdout:
    {"manifestDigest": "sha256:...", "layerDigest": "sha256:...",
     "configDigest": "sha256:...", "size": <wasm layer bytes>}
Any failure exits non-zero with a message on stderr.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

import oras.provider

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(data: bytes, media_type: str) -> dict:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def http_get(url: str, headers: dict, auth: str | None):
    """A plain GET; returns (status, headers, body) for any HTTP status."""
    if auth:
        headers = {**headers, "Authorization": "Basic " + auth}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def push(args) -> dict:
    base = f"{'http' if args.insecure else 'https'}://{args.registry}"
    auth = None
    if args.username is not None:
        auth = base64.b64encode(f"{args.username}:{args.password}".encode()).decode()

    # Ask the registry how it wants to be authenticated, and fail fast where
    # oras would retry for minutes (no credentials, registry down).
    status, headers, _ = http_get(f"{base}/v2/", {}, None)
    challenge = headers.get("WWW-Authenticate", "") if status == 401 else ""
    if challenge and auth is None:
        raise RuntimeError(f"{base}/v2/ asks for authentication ({challenge}); pass --username/--password")
    basic = challenge.lower().startswith("basic")
    if basic and http_get(f"{base}/v2/", {}, auth)[0] == 401:
        raise RuntimeError(f"{base}/v2/ refuses the credentials of user {args.username!r}")
    registry = oras.provider.Registry(
        args.registry, insecure=args.insecure, auth_backend="basic" if basic else "token")
    if auth is not None:
        registry.auth.set_basic_auth(args.username, args.password)
    container = registry.get_container(f"{args.registry}/{args.repo}:{args.tag}")

    wasm = open(args.wasm, "rb").read()
    layers = [(args.wasm, descriptor(wasm, args.layer_media_type))]
    for extra in args.extra_layer:
        path, _, media_type = extra.rpartition(":")
        if not path or not media_type:
            raise RuntimeError(f"--extra-layer {extra!r}: expected PATH:MEDIATYPE")
        layers.append((path, descriptor(open(path, "rb").read(), media_type)))

    config = json.dumps({
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
        "author": None,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer["digest"] for _, layer in layers],
        "component": {"exports": [], "imports": [], "target": None},
    }).encode()
    config_desc = descriptor(config, args.config_media_type)

    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "wb") as f:
            f.write(config)
        for path, layer in layers + [(config_path, config_desc)]:
            registry._check_200_response(registry.upload_blob(path, container, layer))

    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_desc,
        "layers": [layer for _, layer in layers],
    }
    registry._check_200_response(registry.upload_manifest(manifest, container))

    # The digest the registry serves for the tag, not one computed locally.
    url = f"{base}/v2/{args.repo}/manifests/{args.tag}"
    status, headers, body = http_get(url, {"Accept": MANIFEST_MEDIA_TYPE}, auth)
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}: {body[:200]!r}")
    manifest_digest = digest_of(body)
    served = headers.get("Docker-Content-Digest")
    if served != manifest_digest:
        raise RuntimeError(f"GET {url}: Docker-Content-Digest {served} but body hashes to {manifest_digest}")
    return {
        "manifestDigest": manifest_digest,
        "layerDigest": layers[0][1]["digest"],
        "configDigest": config_desc["digest"],
        "size": len(wasm),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", required=True, help="HOST:PORT")
    p.add_argument("--repo", required=True, help="repository, e.g. team/guest")
    p.add_argument("--tag", required=True)
    p.add_argument("--wasm", required=True, help="the component to push")
    p.add_argument("--insecure", action="store_true", help="plain HTTP")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--config-media-type", default="application/vnd.wasm.config.v0+json")
    p.add_argument("--layer-media-type", default="application/wasm")
    p.add_argument("--extra-layer", action="append", default=[], metavar="PATH:MEDIATYPE")
    args = p.parse_args()
    if (args.username is None) != (args.password is None):
        p.error("--username and --password go together")
    try:
        print(json.dumps(push(args)), flush=True)
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"oci_push.py: push to {args.registry}/{args.repo}:{args.tag} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
