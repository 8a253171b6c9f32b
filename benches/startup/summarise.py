#!/usr/bin/env python3
"""summarise.py SAMPLES.tsv       -> medians per mode x workload (TSV)
   summarise.py --table SUMMARY.tsv -> the medians as a Markdown table

Medians are over the samples whose status is "ok"; when none is, over all
samples, and the row's status says why (timeout:PHASE, failed:..., fallback:...)."""
import csv
import statistics
import sys

NUMERIC = ["pull_s", "create_s", "start_s", "total_s", "requests", "connections", "bytes",
           "save_s", "save_requests", "save_connections", "save_bytes", "rss_kib", "store_layers"]


def rows(path):
    with open(path) as f:
        lines = [l for l in f if not l.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def median(values):
    nums = [float(v) for v in values if v not in ("NA", "")]
    return "NA" if not nums else f"{statistics.median(nums):.3f}".rstrip("0").rstrip(".")


def summarise(path):
    groups = {}
    for r in rows(path):
        groups.setdefault((r["mode"], r["workload"]), []).append(r)
    out = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    out.writerow(["mode", "workload", "ok", "samples", "status"] + NUMERIC)
    for (mode, workload), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        used = ok or rs
        status = "ok" if ok else sorted({r["status"] for r in rs})[0]
        out.writerow([mode, workload, len(ok), len(rs), status] + [median(r[c] for r in used) for c in NUMERIC])


def table(path):
    label = {"full": "full pull (gzip)", "ours": "estargz-fuse store", "upstream": "stargz-store v0.15.1",
             "ours-opt": "estargz-fuse store, optimized image", "upstream-opt": "stargz-store v0.15.1, optimized image",
             "ctr-full": "containerd full pull (overlayfs)", "ctr-ours": "containerd + estargz-snapshotter",
             "ctr-upstream": "containerd + containerd-stargz-grpc v0.15.1"}

    def sec(r, c):
        v = r[c]
        if v == "NA":
            return "-"
        cut = r["status"].startswith("timeout") and c in ("start_s", "total_s", "save_s")
        return (">" if cut else "") + f"{float(v):.2f}"

    def count(v):
        return "n/a" if v == "NA" else f"{float(v):,.0f}"

    def mb(v):
        return "n/a" if v == "NA" else f"{float(v) / 1e6:.1f}"

    def mib(v):
        return "-" if v == "NA" else f"{float(v) / 1024:.0f}"

    print("| workload | mode | pull s | create s | start s | total s | requests | conns | MB fetched "
          "| save s | save MB | store peak RSS MiB | samples |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows(path):
        save = r["workload"] == "save"
        samples = f'{r["ok"]}/{r["samples"]} ok' + ("" if r["status"] == "ok" else f' ({r["status"]})')
        print(f'| {r["workload"]} | {label.get(r["mode"], r["mode"])} | {sec(r, "pull_s")} | {sec(r, "create_s")} '
              f'| {sec(r, "start_s")} | {sec(r, "total_s")} | {count(r["requests"])} | {count(r["connections"])} '
              f'| {mb(r["bytes"])} | {sec(r, "save_s") if save else "-"} | {mb(r["save_bytes"]) if save else "-"} '
              f'| {mib(r["rss_kib"])} | {samples} |')


if sys.argv[1] == "--table":
    table(sys.argv[2])
else:
    summarise(sys.argv[1])
