//! Fetching, as soon as an image's layers are open, what its container
//! loads first: the program its config names (entrypoint, and the command
//! when that is a program too), the files the runtime reads at every start
//! (`/etc/passwd`, `/etc/group`), and then what those programs load — the
//! ELF interpreter and `DT_NEEDED` libraries and theirs, the `#!`
//! interpreter of a script — level by level. Without it a start is a
//! chain of misses, each a round trip plus its transfer, the next library
//! named only once the one before is in; with it they arrive while the
//! runtime is still creating the container.
//!
//! Only a guess, and a bounded one: files are looked up in the image's own
//! layers (topmost first, symlinks followed across them, whiteouts and
//! opaque directories honoured), every byte still comes through the
//! verified chunk path, and what is not found is left to on-demand reads.
//! Hostile images cost bounded work: few files, few levels, a byte budget,
//! small header reads (see [`crate::elf`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use estargz_core::reader::{NodeId, Reader};
use estargz_core::toc::EntryType;

use crate::elf;
use crate::optimize::bundle::{environment, ImageProcess};
use crate::overlay::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Files the runtime reads when it starts any container (runc resolves
/// the user and its groups).
const RUNTIME_FILES: [&str; 2] = ["/etc/passwd", "/etc/group"];
/// The dynamic loader reads it before any library.
const LOADER_CACHE: &str = "/etc/ld.so.cache";
/// Files fetched for one image.
const MAX_FILES: usize = 64;
/// Rounds of "fetch, then read what those files load".
const MAX_LEVELS: usize = 4;
/// Symlinks followed resolving one path.
const MAX_LINK_HOPS: usize = 16;
/// Path components walked resolving one path (symlinks included).
const MAX_COMPONENTS: usize = 256;
/// Bytes of a script's first line read.
const SHEBANG_BYTES: u64 = 256;

/// One file of the image: its layer (index into the stack) and node.
type Found = (usize, NodeId);

/// What the prefetch did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommandPrefetch {
    /// The files fetched (or found cached), as `/path` in their layer.
    pub files: Vec<String>,
    /// Decompressed bytes of those files.
    pub bytes: u64,
}

/// The regular file `path` names in `layers` (topmost first) as a
/// container sees it: each component in the topmost layer that has it,
/// unless a whiteout or an opaque directory above hides it; symlinks
/// followed, relative ones from their directory, absolute ones from the
/// image's root.
pub fn find(layers: &[Arc<Reader>], path: &str) -> Option<Found> {
    let mut pending: VecDeque<String> = components(path).collect();
    let mut dir: Vec<String> = Vec::new();
    let (mut hops, mut walked) = (0, 0);
    while let Some(part) = pending.pop_front() {
        walked += 1;
        if walked > MAX_COMPONENTS {
            return None;
        }
        if part == ".." {
            dir.pop();
            continue;
        }
        let (layer, id) = top_entry(layers, &dir, &part)?;
        let reader = &layers[layer];
        let id = reader.resolve(id);
        let entry = reader.entry(id);
        match entry.kind() {
            EntryType::Symlink => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return None;
                }
                let target = entry.link_name();
                if target.starts_with('/') {
                    dir.clear();
                }
                let rest = std::mem::take(&mut pending);
                pending = components(target).collect();
                pending.extend(rest);
            }
            EntryType::Dir if !pending.is_empty() => dir.push(part),
            EntryType::Reg if pending.is_empty() => return Some((layer, id)),
            _ => return None,
        }
    }
    None
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
}

/// The entry `name` of directory `dir` in the topmost layer that has it;
/// `None` when a layer above hides it.
fn top_entry(layers: &[Arc<Reader>], dir: &[String], name: &str) -> Option<Found> {
    let dir_path = format!("/{}", dir.join("/"));
    let whiteout = format!("{WHITEOUT_PREFIX}{name}");
    for (i, layer) in layers.iter().enumerate() {
        let Ok(d) = layer.lookup(&dir_path) else {
            continue;
        };
        let d = layer.entry(layer.resolve(d));
        if d.kind() != EntryType::Dir {
            // Something other than a directory here hides the lower ones.
            return None;
        }
        if let Some(id) = d.child(name) {
            return Some((i, id));
        }
        if d.child(&whiteout).is_some() || d.child(OPAQUE_MARKER).is_some() {
            return None;
        }
    }
    None
}

/// The programs the image's config starts: the first word of its
/// entrypoint and, when that is a program found on the `PATH` too, of its
/// command (an entrypoint script usually ends by running it).
fn programs(layers: &[Arc<Reader>], process: &ImageProcess, path: &str) -> Vec<Found> {
    let mut words = Vec::new();
    words.extend(process.entrypoint.first());
    words.extend(process.cmd.first());
    words
        .into_iter()
        .filter_map(|word| program(layers, word, path, &process.working_dir))
        .collect()
}

/// `word` as the runtime finds it: a path (relative ones from the working
/// directory) or a name searched for on `path`.
fn program(layers: &[Arc<Reader>], word: &str, path: &str, cwd: &str) -> Option<Found> {
    if word.contains('/') {
        let full = if word.starts_with('/') {
            word.to_string()
        } else {
            format!("{cwd}/{word}")
        };
        return find(layers, &full);
    }
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| find(layers, &format!("{d}/{word}")))
}

/// Up to `len` bytes at `offset` of file `id` (fewer at its end); `None`
/// when it cannot be read (the container's own reads report that).
fn read(reader: &Reader, id: NodeId, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    let mut done = 0;
    while done < buf.len() {
        match reader.read_at(id, offset.checked_add(done as u64)?, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(_) => return None,
        }
    }
    buf.truncate(done);
    Some(buf)
}

/// What executing `file` loads next, found in `layers`; data files it
/// reads (the loader's cache) are added to `data` as well.
fn loads(layers: &[Arc<Reader>], file: Found, path: &str, data: &mut HashSet<Found>) -> Vec<Found> {
    let reader = &layers[file.0];
    let Some(head) = read(reader, file.1, 0, SHEBANG_BYTES) else {
        return Vec::new();
    };
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let Some(interpreter) = words.next() else {
            return Vec::new();
        };
        let mut found: Vec<Found> = find(layers, interpreter).into_iter().collect();
        // `#!/usr/bin/env NAME`: NAME from the PATH too.
        if interpreter.rsplit('/').next() == Some("env") {
            if let Some(name) = words.find(|w| !w.starts_with('-') && !w.contains('=')) {
                found.extend(program(layers, name, path, "/"));
            }
        }
        return found;
    }
    if !elf::is_elf64_le(&head) {
        return Vec::new();
    }
    let Some(needs) = elf::needs(|offset, len| read(reader, file.1, offset, len)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(interpreter) = &needs.interpreter {
        found.extend(find(layers, interpreter));
        if let Some(cache) = find(layers, LOADER_CACHE) {
            if data.insert(cache) {
                found.push(cache);
            }
        }
    }
    let dirs = elf::library_dirs(needs.machine);
    for name in &needs.needed {
        found.extend(
            dirs.iter()
                .find_map(|d| find(layers, &format!("{d}/{name}"))),
        );
    }
    found
}

/// Fetches the files of `found` not fetched yet, one request per layer,
/// the layers in parallel; returns the ones taken.
fn fetch(
    layers: &[Arc<Reader>],
    found: Vec<Found>,
    seen: &mut HashSet<Found>,
    budget: &mut u64,
    done: &mut CommandPrefetch,
) -> Vec<Found> {
    let mut fresh = Vec::new();
    for f in found {
        let size = layers[f.0].entry(f.1).size();
        if seen.len() >= MAX_FILES || size > *budget || !seen.insert(f) {
            continue;
        }
        *budget -= size;
        done.bytes += size;
        done.files.push(layers[f.0].path(f.1));
        fresh.push(f);
    }
    std::thread::scope(|s| {
        for (i, layer) in layers.iter().enumerate() {
            let ids: Vec<NodeId> = fresh.iter().filter(|f| f.0 == i).map(|f| f.1).collect();
            if !ids.is_empty() {
                s.spawn(move || {
                    // A failure leaves those files to on-demand reads.
                    if let Err(e) = layer.prefetch_files(&ids) {
                        log::debug!("command prefetch: {e}");
                    }
                });
            }
        }
    });
    fresh
}

/// Fetches what a container of the image described by `process` and
/// `layers` (topmost first) loads first, at most `max_bytes` of it
/// (decompressed), and says what that was. Runs on the caller's thread
/// until done.
pub fn prefetch(layers: &[Arc<Reader>], process: &ImageProcess, max_bytes: u64) -> CommandPrefetch {
    let mut done = CommandPrefetch::default();
    // `environment` puts in the runtime's default PATH when there is none.
    let path = environment(process, &[])
        .into_iter()
        .find_map(|kv| kv.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_default();
    let programs = programs(layers, process, &path);
    if programs.is_empty() {
        return done;
    }
    let (mut seen, mut budget) = (HashSet::new(), max_bytes);
    // Data files are fetched, never inspected.
    let runtime: Vec<Found> = RUNTIME_FILES
        .iter()
        .filter_map(|p| find(layers, p))
        .collect();
    let mut data: HashSet<Found> = runtime.iter().copied().collect();
    let mut level = [programs, runtime].concat();
    for _ in 0..MAX_LEVELS {
        let fetched = fetch(layers, level, &mut seen, &mut budget, &mut done);
        level = Vec::new();
        for f in fetched
            .into_iter()
            .filter(|f| !data.contains(f))
            .collect::<Vec<_>>()
        {
            level.extend(loads(layers, f, &path, &mut data));
        }
        if level.is_empty() {
            break;
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_layers::{cached, layer, E};

    fn found(layers: &[Arc<Reader>], path: &str) -> Option<(usize, String)> {
        find(layers, path).map(|(i, id)| (i, layers[i].path(id)))
    }

    #[test]
    fn paths_resolve_as_the_container_sees_them() {
        let lower = layer(&[
            E::File("usr/bin/tool", b"lower", 0o755),
            E::Link("bin", "usr/bin"),
            E::File("usr/lib/ld.so", b"ld", 0o755),
            E::Link("lib64/ld.so", "../usr/lib/ld.so"),
            E::File("usr/lib/libx.so.1", b"x", 0o644),
            E::File("opt/a/old", b"old", 0o644),
            E::File("etc/gone", b"gone", 0o644),
            E::Link("loop", "loop"),
        ]);
        let upper = layer(&[
            E::File("usr/bin/tool", b"upper", 0o755),
            E::File("etc/.wh.gone", b"", 0o644),
            E::File("opt/a/.wh..wh..opq", b"", 0o644),
            E::Link("usr/bin/abs", "/usr/lib/libx.so.1"),
        ]);
        let layers = [upper, lower];
        // Through the lower layer's /bin symlink to the upper layer's file.
        assert_eq!(
            found(&layers, "/bin/tool"),
            Some((0, "usr/bin/tool".into()))
        );
        assert_eq!(
            found(&layers, "/../usr/./bin//tool"),
            Some((0, "usr/bin/tool".into()))
        );
        assert_eq!(
            found(&layers, "/lib64/ld.so"),
            Some((1, "usr/lib/ld.so".into()))
        );
        assert_eq!(
            found(&layers, "/usr/bin/abs"),
            Some((1, "usr/lib/libx.so.1".into()))
        );
        // Hidden by a whiteout, by an opaque directory; not files; a loop.
        assert_eq!(found(&layers, "/etc/gone"), None);
        assert_eq!(found(&layers, "/opt/a/old"), None);
        assert_eq!(found(&layers, "/usr/bin"), None);
        assert_eq!(found(&layers, "/usr/bin/tool/x"), None);
        assert_eq!(found(&layers, "/loop"), None);
        assert_eq!(found(&layers, "/nothing"), None);
    }

    /// A file of the image: its absolute path and its bytes.
    type ImageFile = (String, Vec<u8>);

    /// A dynamically linked program of this machine, with its loader and
    /// libraries as an image would hold them.
    fn host_program() -> Option<(Vec<u8>, Vec<ImageFile>)> {
        let program = ["/bin/sh", "/usr/bin/env", "/bin/ls"]
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .find(|b| elf::is_elf64_le(b))?;
        let read_from = |bytes: &[u8], offset: u64, len: u64| {
            let start = (offset as usize).min(bytes.len());
            Some(bytes[start..(start + len as usize).min(bytes.len())].to_vec())
        };
        let needs = elf::needs(|o, l| read_from(&program, o, l))?;
        let mut files = vec![(
            needs.interpreter.clone()?,
            std::fs::read(needs.interpreter.as_ref()?).ok()?,
        )];
        for name in &needs.needed {
            let dir = elf::library_dirs(needs.machine)
                .into_iter()
                .find(|d| std::path::Path::new(&format!("{d}/{name}")).exists())?;
            // Kept under /usr/lib, found through the image's /lib symlink.
            let dir = dir.strip_prefix("/usr").unwrap_or(&dir).to_string();
            files.push((
                format!("/usr{dir}/{name}"),
                std::fs::read(format!("{dir}/{name}")).ok()?,
            ));
        }
        Some((program, files))
    }

    #[test]
    fn the_command_its_loader_libraries_and_the_runtime_files_are_fetched() {
        let Some((program, libraries)) = host_program() else {
            eprintln!("no dynamically linked 64-bit program here; skipped");
            return;
        };
        let unrelated = vec![7u8; 100_000];
        let mut base: Vec<E> = libraries
            .iter()
            .map(|(p, b)| E::File(&p[1..], b, 0o755))
            .collect();
        base.extend([
            E::Link("lib", "usr/lib"),
            E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
            E::File("etc/group", b"root:x:0:\n", 0o644),
            E::File("etc/ld.so.cache", b"cache", 0o644),
            E::File("usr/share/doc/unrelated", &unrelated, 0o644),
        ]);
        let base = layer(&base);
        let app = layer(&[
            E::File("usr/bin/app", &program, 0o755),
            E::File(
                "usr/local/bin/entry",
                b"#!/usr/bin/env -S app -x\nexec app\n",
                0o755,
            ),
        ]);
        let layers = [app.clone(), base.clone()];
        let process = ImageProcess {
            entrypoint: vec!["entry".into()],
            cmd: vec!["--serve".into()],
            ..ImageProcess::default()
        };
        let done = prefetch(&layers, &process, u64::MAX);
        for (layer, path) in [
            (&app, "usr/local/bin/entry"),
            (&app, "usr/bin/app"),
            (&base, "etc/passwd"),
            (&base, "etc/group"),
            (&base, "etc/ld.so.cache"),
        ]
        .into_iter()
        .chain(libraries.iter().map(|(p, _)| (&base, &p[1..])))
        {
            assert!(done.files.iter().any(|f| f == path), "{path}: {done:?}");
            assert!(cached(layer, path), "{path} not cached");
        }
        assert!(!cached(&base, "usr/share/doc/unrelated"));
        assert_eq!(done.files.len(), 5 + libraries.len(), "{done:?}");

        // A budget: the script fits, the program does not.
        let small = [layer(&[
            E::File("usr/bin/app", &program, 0o755),
            E::File("usr/bin/entry", b"#!/usr/bin/app\n", 0o755),
        ])];
        let process = ImageProcess {
            cmd: vec!["/usr/bin/entry".into()],
            ..ImageProcess::default()
        };
        let done = prefetch(&small, &process, 100);
        assert_eq!(done.files, ["usr/bin/entry"]);
    }

    #[test]
    fn images_without_a_command_or_with_hostile_ones_cost_nothing() {
        let layers = [layer(&[
            E::Link("usr/bin/a", "b"),
            E::Link("usr/bin/b", "a"),
            E::File("usr/bin/elf", b"\x7fELF\x02\x01garbage", 0o755),
            E::File("usr/bin/script", b"#!", 0o755),
        ])];
        for cmd in [
            vec![],
            vec!["a".to_string()],
            vec!["".into()],
            vec!["/".into()],
        ] {
            let process = ImageProcess {
                cmd,
                ..ImageProcess::default()
            };
            assert_eq!(
                prefetch(&layers, &process, u64::MAX),
                CommandPrefetch::default()
            );
        }
        for cmd in ["elf", "script"] {
            let process = ImageProcess {
                cmd: vec![cmd.into()],
                ..ImageProcess::default()
            };
            let done = prefetch(&layers, &process, u64::MAX);
            assert_eq!(done.files, [format!("usr/bin/{cmd}")]);
        }
    }
}
