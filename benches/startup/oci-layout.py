#!/usr/bin/env python3
"""oci-layout.py DIR TAG LAYER.tar...: writes an OCI image layout at DIR
with one linux/amd64 image tagged TAG whose layers are the given tars,
gzip-compressed (level 6, no timestamps, so reruns give the same digests)
in the given order (first = bottom)."""
import gzip
import hashlib
import json
import os
import sys

out, tag, tars = sys.argv[1], sys.argv[2], sys.argv[3:]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data: bytes) -> dict:
    dgst = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, dgst), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + dgst, "size": len(data)}


class Hashing:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


layers, diff_ids = [], []
for tar in tars:
    tmp = os.path.join(blobs, "tmp")
    diff = hashlib.sha256()
    with open(tmp, "wb") as raw:
        hashed = Hashing(raw)
        with gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=6, mtime=0, filename="") as gz, open(tar, "rb") as src:
            while block := src.read(1 << 20):
                diff.update(block)
                gz.write(block)
    dgst = hashed.h.hexdigest()
    os.replace(tmp, os.path.join(blobs, dgst))
    layers.append({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:" + dgst,
        "size": hashed.n,
    })
    diff_ids.append("sha256:" + diff.hexdigest())

created = "2026-01-01T00:00:00Z"
config = {
    "created": created,
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["python3"],
    },
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
    "history": [
        {"created": created, "created_by": "debootstrap --variant=minbase bookworm"},
        {"created": created, "created_by": "apt-get install --no-install-recommends python3"},
    ][: len(tars)],
}
cfg = put(json.dumps(config, separators=(",", ":")).encode())
cfg["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": cfg,
    "layers": layers,
}
man = put(json.dumps(manifest, separators=(",", ":")).encode())
man["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
man["annotations"] = {"org.opencontainers.image.ref.name": tag}
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [man]}, f)
total = sum(l["size"] for l in layers)
print(f"image: {len(layers)} layers, {total / 1e6:.1f} MB compressed", file=sys.stderr)
