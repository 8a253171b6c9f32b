//! Human and JSON output of the inspect, ls and convert commands.

use std::io::{self, Write};

use base64::Engine as _;
use estargz_core::reader::{Entry, NodeId};
use estargz_core::{BuildResult, EntryType, Error, Footer, Reader};
use serde_json::{json, Value};

fn stdout_err(e: io::Error) -> Error {
    Error::io("writing to stdout", e)
}

fn print_json(out: &mut dyn Write, value: &Value) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| stdout_err(e.into()))?;
    writeln!(out).map_err(stdout_err)
}

pub fn print_build_result(
    out: &mut dyn Write,
    r: &BuildResult,
    as_json: bool,
) -> Result<(), Error> {
    let annotations = estargz_core::remote::manifest::built_layer_annotations(r);
    if as_json {
        return print_json(
            out,
            &json!({
                "format": r.format.build_name(),
                "mediaType": estargz_core::remote::manifest::layer_media_type(r.format),
                "blobDigest": r.blob_digest,
                "blobSize": r.blob_size,
                "tocDigest": r.toc_digest,
                "diffID": r.diff_id,
                "uncompressedSize": r.uncompressed_size,
                "hasExternalTOC": r.toc_offset.is_none(),
                "tocOffset": r.toc_offset,
                "tocEntries": r.toc_entries,
                "missedPrioritized": r.missed_prioritized,
                "annotations": annotations,
            }),
        );
    }
    let mut text = format!(
        "format:            {}\nblob digest:       {}\nblob size:         {}\ntoc digest:        {}\ndiff id:           {}\nuncompressed size: {}\nannotations:\n",
        r.format.build_name(), r.blob_digest, r.blob_size, r.toc_digest, r.diff_id, r.uncompressed_size
    );
    for (k, v) in &annotations {
        text.push_str(&format!("  {k}={v}\n"));
    }
    for m in &r.missed_prioritized {
        text.push_str(&format!("prioritized file not found: {m}\n"));
    }
    out.write_all(text.as_bytes()).map_err(stdout_err)
}

pub fn print_inspect(reader: &Reader, as_json: bool) -> Result<(), Error> {
    let (format, toc_offset) = match reader.footer() {
        Footer::Estargz { toc_offset } => ("estargz", Some(toc_offset)),
        Footer::ExternalToc => ("estargz-external-toc", None),
        Footer::Legacy { toc_offset } => ("stargz-legacy", Some(toc_offset)),
        Footer::ZstdChunked(z) => (reader.format().name(), Some(z.toc.offset)),
    };
    let toc = reader.toc()?;
    let count = |kind: EntryType| toc.entries.iter().filter(|e| e.kind == kind).count();
    let file_bytes: u64 = toc
        .entries
        .iter()
        .filter(|e| e.kind == EntryType::Reg)
        .map(|e| e.size)
        .sum();
    let value = json!({
        "format": format,
        "generation": reader.format().generation(),
        "blobSize": reader.blob_size(),
        "footerSize": reader.footer().size(),
        "hasExternalTOC": toc_offset.is_none(),
        "tocOffset": toc_offset,
        "tocDigest": reader.toc_digest(),
        "manifestChecksum": reader.manifest_checksum(),
        "tarSplitDigest": reader.tar_split_digest(),
        "tocVersion": toc.version,
        "entries": toc.entries.len(),
        "files": count(EntryType::Reg),
        "chunks": toc.entries.iter().filter(|e| e.kind.is_data() && (e.kind == EntryType::Chunk || e.size > 0)).count(),
        "directories": count(EntryType::Dir),
        "fileBytes": file_bytes,
        "prefetchLandmark": reader.lookup(".prefetch.landmark").is_ok(),
        "noPrefetchLandmark": reader.lookup(".no.prefetch.landmark").is_ok(),
    });
    let mut out = io::stdout().lock();
    if as_json {
        return print_json(&mut out, &value);
    }
    for (k, v) in value.as_object().expect("object literal") {
        writeln!(
            out,
            "{k}: {}",
            v.as_str().map(str::to_string).unwrap_or(v.to_string())
        )
        .map_err(stdout_err)?;
    }
    Ok(())
}

fn node_json(reader: &Reader, id: NodeId) -> Value {
    let e = reader.entry(id);
    let link = e.hardlink_target();
    let kind = if link.is_some() {
        "hardlink"
    } else {
        e.kind().as_str()
    };
    let mut v = json!({
        "path": e.path(),
        "type": kind,
        "mode": e.mode() & 0o7777,
        "uid": e.uid(),
        "gid": e.gid(),
        "mtime": e.mod_time().unwrap_or(0),
        "nlink": link.map_or(e.nlink(), |t| reader.entry(t).nlink()),
    });
    let obj = v.as_object_mut().expect("object literal");
    if !e.user_name().is_empty() {
        obj.insert("userName".into(), e.user_name().into());
    }
    if !e.group_name().is_empty() {
        obj.insert("groupName".into(), e.group_name().into());
    }
    match e.kind() {
        EntryType::Reg if link.is_none() => {
            obj.insert("size".into(), e.size().into());
            let digest = e.digest().map(ToString::to_string).unwrap_or_default();
            obj.insert("digest".into(), digest.into());
        }
        EntryType::Symlink | EntryType::Hardlink => {
            let target = link.map_or(e.link_name().to_string(), |t| reader.path(t));
            obj.insert("linkName".into(), target.into());
        }
        EntryType::Char | EntryType::Block => {
            obj.insert("devMajor".into(), e.dev_major().into());
            obj.insert("devMinor".into(), e.dev_minor().into());
        }
        _ => {}
    }
    if !e.xattrs().is_empty() {
        let x: serde_json::Map<String, Value> = e
            .xattrs()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(v).into(),
                )
            })
            .collect();
        obj.insert("xattrs".into(), x.into());
    }
    if e.is_implicit() {
        obj.insert("implicit".into(), true.into());
    }
    v
}

fn type_char(e: &Entry) -> char {
    if e.hardlink_target().is_some() {
        return 'h';
    }
    match e.kind() {
        EntryType::Dir => 'd',
        EntryType::Symlink => 'l',
        EntryType::Char => 'c',
        EntryType::Block => 'b',
        EntryType::Fifo => 'p',
        _ => '-',
    }
}

fn mode_string(mode: u32) -> String {
    let mut s = String::new();
    for (shift, special, upper) in [(6, 0o4000, 'S'), (3, 0o2000, 'S'), (0, 0o1000, 'T')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => upper.to_ascii_lowercase(),
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

pub fn print_ls(reader: &Reader, path: &str, long: bool, as_json: bool) -> Result<(), Error> {
    let start = reader.lookup(path)?;
    let mut ids: Vec<NodeId> = Vec::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if id != estargz_core::reader::ROOT {
            ids.push(id);
        }
        stack.extend(reader.entry(id).children().rev().map(|(_, child)| child));
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    if as_json {
        let list: Vec<Value> = ids.iter().map(|&id| node_json(reader, id)).collect();
        return print_json(&mut out, &Value::Array(list));
    }
    for id in ids {
        let e = reader.entry(id);
        let mut name = e.path();
        if e.kind() == EntryType::Dir {
            name.push('/');
        }
        if let Some(t) = e.hardlink_target() {
            name = format!("{name} link to {}", reader.path(t));
        } else if e.kind() == EntryType::Symlink {
            name = format!("{name} -> {}", e.link_name());
        }
        if long {
            let size = match e.kind() {
                EntryType::Char | EntryType::Block => {
                    format!("{},{}", e.dev_major(), e.dev_minor())
                }
                _ if e.hardlink_target().is_some() => "0".into(),
                _ => e.size().to_string(),
            };
            writeln!(
                out,
                "{}{} {}/{} {:>10} {} {}",
                type_char(&e),
                mode_string(e.mode()),
                if e.user_name().is_empty() {
                    e.uid().to_string()
                } else {
                    e.user_name().to_string()
                },
                if e.group_name().is_empty() {
                    e.gid().to_string()
                } else {
                    e.group_name().to_string()
                },
                size,
                e.mod_time()
                    .map_or_else(|| "-".into(), estargz_core::toc::format_time),
                name
            )
            .map_err(stdout_err)?;
        } else {
            writeln!(out, "{name}").map_err(stdout_err)?;
        }
    }
    out.flush().map_err(stdout_err)
}
