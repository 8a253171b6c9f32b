//! Writing tar headers: the fixed USTAR headers of the TOC entry and the
//! landmark files (byte-identical to the reference), and general headers with
//! PAX extensions for the directory-to-tar converter.

use std::collections::BTreeMap;

use crate::tar::BLOCK;

/// Fields of one header to write.
#[derive(Debug, Clone, Default)]
pub struct HeaderSpec {
    pub name: String,
    pub link_name: String,
    pub typeflag: u8,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: i64,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Writes `value` as zero-padded octal with a trailing NUL; false if it does not fit.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

fn put_str(field: &mut [u8], s: &[u8]) -> bool {
    if s.len() > field.len() {
        return false;
    }
    field[..s.len()].copy_from_slice(s);
    true
}

fn finish_checksum(block: &mut [u8; 512]) {
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| b as u64).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

/// A plain USTAR header; fields that do not fit must be carried by PAX
/// records (see [`entry_headers`]), here they are written as 0 / truncated.
fn ustar_block(spec: &HeaderSpec, name: &[u8]) -> [u8; 512] {
    let mut b = [0u8; 512];
    // Long names go into prefix + name when they split at a slash.
    if !put_str(&mut b[0..100], name) {
        let split = (0..name.len())
            .rev()
            .find(|&i| name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0);
        if let Some(i) = split {
            put_str(&mut b[345..500], &name[..i]);
            put_str(&mut b[0..100], &name[i + 1..]);
        } else {
            put_str(&mut b[0..100], &name[..100]);
        }
    }
    put_octal(&mut b[100..108], spec.mode as u64);
    if !put_octal(&mut b[108..116], spec.uid) {
        put_octal(&mut b[108..116], 0);
    }
    if !put_octal(&mut b[116..124], spec.gid) {
        put_octal(&mut b[116..124], 0);
    }
    if !put_octal(&mut b[124..136], spec.size) {
        put_octal(&mut b[124..136], 0);
    }
    if !put_octal(&mut b[136..148], spec.mtime.max(0) as u64) {
        put_octal(&mut b[136..148], 0);
    }
    b[156] = spec.typeflag;
    put_str(
        &mut b[157..257],
        &spec.link_name.as_bytes()[..spec.link_name.len().min(100)],
    );
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    put_str(
        &mut b[265..297],
        &spec.uname.as_bytes()[..spec.uname.len().min(32)],
    );
    put_str(
        &mut b[297..329],
        &spec.gname.as_bytes()[..spec.gname.len().min(32)],
    );
    put_octal(&mut b[329..337], spec.dev_major);
    put_octal(&mut b[337..345], spec.dev_minor);
    finish_checksum(&mut b);
    b
}

/// The USTAR header of a simple regular file with all metadata zero, as the
/// reference writes for `stargz.index.json` and the landmark files.
pub fn simple_file_header(name: &str, size: u64) -> [u8; 512] {
    ustar_block(
        &HeaderSpec {
            name: name.to_string(),
            typeflag: b'0',
            size,
            ..Default::default()
        },
        name.as_bytes(),
    )
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // The length prefix counts itself, so find the fixed point.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn fits_ustar_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() <= 100 || (1..b.len()).any(|i| b[i] == b'/' && i <= 155 && b.len() - i - 1 <= 100)
}

/// All header blocks for one entry: a PAX `x` header when some field does not
/// fit USTAR (long or non-ASCII names, big ids/sizes, xattrs), then the main header.
pub fn entry_headers(spec: &HeaderSpec) -> Vec<u8> {
    const OCTAL7: u64 = 0o7777777;
    const OCTAL11: u64 = 0o77777777777;
    let mut records = Vec::new();
    if !spec.name.is_ascii() || !fits_ustar_name(&spec.name) {
        pax_record(&mut records, "path", spec.name.as_bytes());
    }
    if !spec.link_name.is_ascii() || spec.link_name.len() > 100 {
        pax_record(&mut records, "linkpath", spec.link_name.as_bytes());
    }
    if spec.uid > OCTAL7 {
        pax_record(&mut records, "uid", spec.uid.to_string().as_bytes());
    }
    if spec.gid > OCTAL7 {
        pax_record(&mut records, "gid", spec.gid.to_string().as_bytes());
    }
    if spec.size > OCTAL11 {
        pax_record(&mut records, "size", spec.size.to_string().as_bytes());
    }
    if spec.mtime < 0 || spec.mtime as u64 > OCTAL11 {
        pax_record(&mut records, "mtime", spec.mtime.to_string().as_bytes());
    }
    if !spec.uname.is_ascii() || spec.uname.len() > 32 {
        pax_record(&mut records, "uname", spec.uname.as_bytes());
    }
    if !spec.gname.is_ascii() || spec.gname.len() > 32 {
        pax_record(&mut records, "gname", spec.gname.as_bytes());
    }
    for (k, v) in &spec.xattrs {
        pax_record(&mut records, &format!("SCHILY.xattr.{k}"), v);
    }
    let mut out = Vec::with_capacity(1024 + records.len());
    if !records.is_empty() {
        let base = spec
            .name
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        let pax_name: String = format!("PaxHeaders.0/{base}")
            .chars()
            .filter(char::is_ascii)
            .take(100)
            .collect();
        let pax = HeaderSpec {
            typeflag: b'x',
            size: records.len() as u64,
            ..Default::default()
        };
        out.extend_from_slice(&ustar_block(&pax, pax_name.as_bytes()));
        out.extend_from_slice(&records);
        out.resize(out.len().next_multiple_of(BLOCK as usize), 0);
    }
    let ascii_name: Vec<u8> = spec.name.bytes().filter(u8::is_ascii).collect();
    out.extend_from_slice(&ustar_block(spec, &ascii_name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landmark_headers_match_reference_checksums() {
        assert_eq!(
            &simple_file_header(".no.prefetch.landmark", 1)[148..156],
            b"013162\0 "
        );
        assert_eq!(
            &simple_file_header(".prefetch.landmark", 1)[148..156],
            b"012547\0 "
        );
    }

    #[test]
    fn pax_lengths_count_themselves() {
        for n in [1, 5, 90, 95, 96, 97, 990, 995, 996] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; n]);
            let len: usize =
                std::str::from_utf8(&out[..out.iter().position(|&b| b == b' ').unwrap()])
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(len, out.len(), "n={n}");
        }
    }

    #[test]
    fn long_names_round_trip_through_the_parser() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(150));
        let spec = HeaderSpec {
            name: long.clone(),
            typeflag: b'0',
            size: 3,
            mode: 0o644,
            uid: 1 << 30,
            mtime: 1_600_000_000,
            xattrs: [("user.k".to_string(), vec![0xff, 0])].into(),
            ..Default::default()
        };
        let mut tar = entry_headers(&spec);
        tar.extend_from_slice(b"abc");
        tar.resize(tar.len().next_multiple_of(512) + 1024, 0);
        let idx = crate::tar::index(&tar).unwrap();
        let e = &idx.entries[0];
        assert_eq!(e.name, long);
        assert_eq!(e.uid, 1 << 30);
        assert_eq!(e.size, 3);
        assert_eq!(e.xattrs["user.k"], vec![0xff, 0]);
    }
}
