//! What a program asks the dynamic loader for: its interpreter
//! (`PT_INTERP`) and the libraries it names (`DT_NEEDED`), read from a
//! 64-bit little-endian ELF file through a bounded number of small reads.
//! Anything else (32-bit or big-endian files, scripts, damaged headers)
//! gives `None` or an empty list, never a panic: the files come from
//! images nobody vetted.

/// Program headers read (a real program has about a dozen).
const MAX_PROGRAM_HEADERS: u64 = 64;
/// Bytes of the dynamic section read.
const MAX_DYNAMIC_BYTES: u64 = 64 << 10;
/// Libraries taken from one file.
const MAX_NEEDED: usize = 64;
/// Longest interpreter path or library name read.
const MAX_NAME: u64 = 4096;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;

/// What an ELF file asks the dynamic loader for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    /// `PT_INTERP`: the loader's absolute path.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names that are plain file names (searched for in the
    /// library directories).
    pub needed: Vec<String>,
    /// `e_machine`, which picks the multiarch directory.
    pub machine: u16,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

struct ProgramHeader {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The text up to the first NUL of `bytes`, when it is UTF-8.
fn c_string(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok()
}

/// Whether `bytes` (a file's start) is an ELF file this module reads.
pub fn is_elf64_le(bytes: &[u8]) -> bool {
    bytes.len() >= 64 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1
}

/// The machine and program headers of the ELF file that `read(offset,
/// len)` reads; `None` when it is not a 64-bit little-endian ELF file or
/// its headers do not hold together.
fn program_headers(
    read: &impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Option<(u16, Vec<ProgramHeader>)> {
    let header = read(0, 64)?;
    if !is_elf64_le(&header) {
        return None;
    }
    let machine = u16_at(&header, 18)?;
    let phoff = u64_at(&header, 32)?;
    let (phentsize, phnum) = (u16_at(&header, 54)? as u64, u16_at(&header, 56)? as u64);
    if phentsize != 56 || phnum == 0 || phnum > MAX_PROGRAM_HEADERS {
        return None;
    }
    let table = read(phoff, phnum * 56)?;
    if table.len() as u64 != phnum * 56 {
        return None;
    }
    let headers = table
        .chunks_exact(56)
        .filter_map(|p| {
            Some(ProgramHeader {
                kind: u32_at(p, 0)?,
                offset: u64_at(p, 8)?,
                vaddr: u64_at(p, 16)?,
                filesz: u64_at(p, 32)?,
            })
        })
        .collect();
    Some((machine, headers))
}

/// The absolute path in `PT_INTERP`, when there is one.
fn interpreter_of(
    read: &impl Fn(u64, u64) -> Option<Vec<u8>>,
    headers: &[ProgramHeader],
) -> Option<String> {
    let p = headers.iter().find(|p| p.kind == PT_INTERP)?;
    let path = read(p.offset, p.filesz.min(MAX_NAME))?;
    c_string(&path)
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
}

/// The interpreter (dynamic loader) of an ELF program, from its first
/// bytes only: a caller can fetch it before the rest of the file is in.
pub fn interpreter(read: impl Fn(u64, u64) -> Option<Vec<u8>>) -> Option<String> {
    let (_, headers) = program_headers(&read)?;
    interpreter_of(&read, &headers)
}

/// The interpreter and libraries of the ELF file that `read(offset, len)`
/// reads (up to `len` bytes; fewer at its end); `None` when it is not a
/// 64-bit little-endian ELF file or its headers do not hold together.
pub fn needs(read: impl Fn(u64, u64) -> Option<Vec<u8>>) -> Option<ElfNeeds> {
    let (machine, headers) = program_headers(&read)?;
    let mut needs = ElfNeeds {
        machine,
        ..ElfNeeds::default()
    };
    needs.interpreter = interpreter_of(&read, &headers);
    let Some(dynamic) = headers.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Some(needs);
    };
    let dynamic = read(dynamic.offset, dynamic.filesz.min(MAX_DYNAMIC_BYTES))?;
    let (mut strtab, mut strsz, mut names) = (None, 0, Vec::new());
    for entry in dynamic.chunks_exact(16) {
        let (tag, value) = (u64_at(entry, 0)?, u64_at(entry, 8)?);
        match tag {
            DT_NULL => break,
            DT_NEEDED if names.len() < MAX_NEEDED => names.push(value),
            DT_STRTAB => strtab = Some(value),
            DT_STRSZ => strsz = value,
            _ => {}
        }
    }
    // DT_STRTAB is an address: the PT_LOAD segment holding it gives its
    // place in the file.
    let Some(strtab) = strtab.and_then(|v| {
        headers
            .iter()
            .find(|p| p.kind == PT_LOAD && v >= p.vaddr && v - p.vaddr < p.filesz)
            .and_then(|p| p.offset.checked_add(v - p.vaddr))
    }) else {
        return Some(needs);
    };
    for name in names.into_iter().filter(|&n| n < strsz) {
        let Some(at) = strtab.checked_add(name) else {
            continue;
        };
        let Some(bytes) = read(at, (strsz - name).min(MAX_NAME)) else {
            continue;
        };
        // A name with a slash is a path the loader opens as it is; "." and
        // ".." are not libraries.
        match c_string(&bytes) {
            Some(n) if !n.is_empty() && !n.contains('/') && n != "." && n != ".." => {
                needs.needed.push(n.to_string())
            }
            _ => {}
        }
    }
    Some(needs)
}

/// Where the loader looks for a library that `ld.so.cache` does not name,
/// in its order (the multiarch directories of `machine` first).
pub fn library_dirs(machine: u16) -> Vec<String> {
    let triplet = match machine {
        62 => Some("x86_64-linux-gnu"),
        183 => Some("aarch64-linux-gnu"),
        243 => Some("riscv64-linux-gnu"),
        21 => Some("powerpc64le-linux-gnu"),
        22 => Some("s390x-linux-gnu"),
        _ => None,
    };
    let mut dirs = Vec::new();
    if let Some(t) = triplet {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"] {
        dirs.push(d.to_string());
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: Vec<u8>) -> impl Fn(u64, u64) -> Option<Vec<u8>> {
        move |offset, len| {
            let start = usize::try_from(offset).ok()?.min(bytes.len());
            let end = start.saturating_add(len as usize).min(bytes.len());
            Some(bytes[start..end].to_vec())
        }
    }

    /// A dynamically linked program of the machine the tests run on.
    fn host_program() -> Option<Vec<u8>> {
        ["/bin/sh", "/usr/bin/env", "/bin/ls"]
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .find(|b| is_elf64_le(b))
    }

    #[test]
    fn a_real_program_names_its_loader_and_c_library() {
        let Some(program) = host_program() else {
            eprintln!("no 64-bit little-endian program here; skipped");
            return;
        };
        let needs = needs(reader(program.clone())).expect("an ELF program");
        // From the headers alone, the same loader.
        assert_eq!(interpreter(reader(program)), needs.interpreter);
        let interp = needs.interpreter.expect("a dynamic program has a loader");
        assert!(interp.starts_with('/') && interp.contains("ld"), "{interp}");
        assert!(
            needs.needed.iter().any(|n| n.starts_with("libc.so")),
            "{:?}",
            needs.needed
        );
        assert!(!library_dirs(needs.machine).is_empty());
    }

    #[test]
    fn damaged_or_foreign_files_give_nothing_and_never_panic() {
        assert_eq!(needs(reader(b"#!/bin/sh\necho hi\n".to_vec())), None);
        assert_eq!(needs(reader(Vec::new())), None);
        let Some(program) = host_program() else {
            return;
        };
        // Every truncation, and every header byte flipped, is survived.
        for cut in [0, 16, 63, 64, 100, 500, 4096, program.len() / 2] {
            let _ = needs(reader(program[..cut.min(program.len())].to_vec()));
        }
        for at in 0..64.min(program.len()) {
            let mut bad = program.clone();
            bad[at] ^= 0xff;
            let _ = needs(reader(bad));
        }
        // Huge counts and offsets are refused before any large read.
        let mut bad = program.clone();
        bad[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(needs(reader(bad)), None);
        let mut bad = program;
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(needs(reader(bad)), None);
    }
}
