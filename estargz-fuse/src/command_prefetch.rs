//! Fetching, as soon as an image's layers are open, what its container
//! loads first: the program its config names (entrypoint, and the command
//! when that is a program too), the files read at every start (runc's
//! `/etc/passwd` and `/etc/group`; the C library, its loader, the loader's
//! cache, `/etc/localtime` and the locale's character tables), and then
//! what those programs load — the ELF interpreter and `DT_NEEDED`
//! libraries and theirs, the `#!` interpreter of a script — level by
//! level, each file in a request of its own, a level's files looked into
//! while their bytes still arrive. Without it a start is a chain of
//! misses, each a round trip plus its transfer, the next library named
//! only once the one before is in; with it they arrive while the runtime
//! is still creating the container.
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

/// Files read when any container starts: runc resolves the user and its
/// groups, the C library the local time zone.
const RUNTIME_FILES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/localtime"];
/// Where the C library finds a locale's character tables (the archive
/// first, then one directory per locale).
const LOCALE_ARCHIVE: &str = "/usr/lib/locale/locale-archive";
const LOCALE_DIR: &str = "/usr/lib/locale";
/// The dynamic loader reads it before any library.
const LOADER_CACHE: &str = "/etc/ld.so.cache";
/// The C library's loaders at the paths their ABIs fix, each with where
/// its distributions put `libc` (Debian's multiarch directory, then
/// `/lib64`; musl's loader is its libc).
const SYSTEM_LOADERS: [(&str, &[&str]); 4] = [
    (
        "/lib64/ld-linux-x86-64.so.2",
        &["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"],
    ),
    (
        "/lib/ld-linux-aarch64.so.1",
        &["/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6"],
    ),
    ("/lib/ld-musl-x86_64.so.1", &[]),
    ("/lib/ld-musl-aarch64.so.1", &[]),
];
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

/// The character tables a program loads when it sets its locale from the
/// environment (`LC_ALL`, `LC_CTYPE`, `LANG`), with glibc's spelling of
/// the codeset (`C.UTF-8` is in `C.utf8`). Without one, or with `C`, the
/// ones of `C.UTF-8`: Python switches to it, and images that set a locale
/// usually set that one.
fn locale_files(env: &[String]) -> [String; 2] {
    let value = |key: &str| {
        env.iter()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .filter(|v| !v.is_empty())
    };
    let name = value("LC_ALL")
        .or_else(|| value("LC_CTYPE"))
        .or_else(|| value("LANG"))
        .filter(|n| !matches!(*n, "C" | "POSIX"))
        .unwrap_or("C.UTF-8");
    let name = match name.split_once('.') {
        Some((language, codeset)) => {
            let (codeset, modifier) = codeset.split_once('@').unwrap_or((codeset, ""));
            let codeset: String = codeset
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            match modifier {
                "" => format!("{language}.{codeset}"),
                m => format!("{language}.{codeset}@{m}"),
            }
        }
        None => name.to_string(),
    };
    [
        LOCALE_ARCHIVE.to_string(),
        format!("{LOCALE_DIR}/{name}/LC_CTYPE"),
    ]
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

/// What executing `file` runs first, found in `layers`: a script's `#!`
/// interpreter (and NAME of `#!/usr/bin/env NAME`), or an ELF program's
/// loader and the loader's cache (added to `data`, which is fetched but
/// not inspected). Known from the file's first bytes, so it is fetched
/// while the rest of the file still arrives.
fn interpreters(
    layers: &[Arc<Reader>],
    file: Found,
    path: &str,
    data: &mut HashSet<Found>,
) -> Vec<Found> {
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
    let Some(interpreter) = elf::interpreter(|offset, len| read(reader, file.1, offset, len))
    else {
        return Vec::new();
    };
    let mut found: Vec<Found> = find(layers, &interpreter).into_iter().collect();
    if let Some(cache) = find(layers, LOADER_CACHE) {
        if data.insert(cache) {
            found.push(cache);
        }
    }
    found
}

/// The image's C library and its loader (and the loader's cache), which
/// nearly every program of an image with them loads first: fetched with
/// the program, not after its first bytes name them (with the default
/// 4 MiB chunks those bytes arrive with the first MiB of the program).
/// Only the first loader found; none for an image without one.
fn system_loader(layers: &[Arc<Reader>]) -> Vec<Found> {
    let Some((loader, libcs)) = SYSTEM_LOADERS
        .iter()
        .find_map(|(loader, libcs)| Some((find(layers, loader)?, libcs)))
    else {
        return Vec::new();
    };
    let mut found = vec![loader];
    found.extend(libcs.iter().find_map(|libc| find(layers, libc)));
    found.extend(find(layers, LOADER_CACHE));
    found
}

/// The libraries an ELF `file` names (`DT_NEEDED`), found in the loader's
/// default directories. Their names are in the dynamic section, often
/// near the file's end.
fn libraries(layers: &[Arc<Reader>], file: Found) -> Vec<Found> {
    let reader = &layers[file.0];
    let Some(needs) = elf::needs(|offset, len| read(reader, file.1, offset, len)) else {
        return Vec::new();
    };
    let dirs = elf::library_dirs(needs.machine);
    needs
        .needed
        .iter()
        .filter_map(|name| {
            dirs.iter()
                .find_map(|d| find(layers, &format!("{d}/{name}")))
        })
        .collect()
}

/// The files fetched so far and what is left of the budget.
struct Fetched {
    seen: HashSet<Found>,
    budget: u64,
    done: CommandPrefetch,
}

impl Fetched {
    /// Starts fetching the files of `found` not fetched yet, each on a
    /// thread of `scope` (so a small library does not wait behind a large
    /// one in a shared response), not waited for: what they load is looked
    /// for meanwhile, as their bytes arrive. Returns the ones taken.
    fn start<'scope>(
        &mut self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        layers: &'scope [Arc<Reader>],
        found: Vec<Found>,
    ) -> Vec<Found> {
        let mut fresh = Vec::new();
        for f in found {
            let size = layers[f.0].entry(f.1).size();
            if self.seen.len() >= MAX_FILES || size > self.budget || !self.seen.insert(f) {
                continue;
            }
            self.budget -= size;
            self.done.bytes += size;
            self.done.files.push(layers[f.0].path(f.1));
            fresh.push(f);
        }
        for &(i, id) in &fresh {
            let layer = &layers[i];
            scope.spawn(move || {
                // A failure leaves the file to on-demand reads.
                if let Err(e) = layer.prefetch_files(&[id]) {
                    log::debug!("command prefetch: {e}");
                }
            });
        }
        fresh
    }
}

/// Fetches what a container of the image described by `process` and
/// `layers` (topmost first) loads first, at most `max_bytes` of it
/// (decompressed), and says what that was. Runs on the caller's thread
/// until done.
pub fn prefetch(layers: &[Arc<Reader>], process: &ImageProcess, max_bytes: u64) -> CommandPrefetch {
    // `environment` puts in the runtime's default PATH when there is none.
    let env = environment(process, &[]);
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_default();
    let programs = programs(layers, process, &path);
    if programs.is_empty() {
        return CommandPrefetch::default();
    }
    let mut fetched = Fetched {
        seen: HashSet::new(),
        budget: max_bytes,
        done: CommandPrefetch::default(),
    };
    // Data files are fetched, never inspected (nor are the loader and
    // libc, which need nothing else).
    let runtime: Vec<Found> = system_loader(layers)
        .into_iter()
        .chain(
            RUNTIME_FILES
                .iter()
                .map(|p| p.to_string())
                .chain(locale_files(&env))
                .filter_map(|p| find(layers, &p)),
        )
        .collect();
    let mut data: HashSet<Found> = runtime.iter().copied().collect();
    std::thread::scope(|s| {
        // `level` is to be fetched, `early` already is: both are looked into.
        let (mut level, mut early) = ([programs, runtime].concat(), Vec::new());
        for _ in 0..MAX_LEVELS {
            let mut started = fetched.start(s, layers, level);
            started.append(&mut early);
            started.retain(|f| !data.contains(f));
            // The loader (or a script's interpreter) runs before any
            // library is named: fetched as soon as the program's first
            // bytes name it.
            let mut first = Vec::new();
            for &f in &started {
                first.extend(interpreters(layers, f, &path, &mut data));
            }
            early = fetched.start(s, layers, first);
            level = started.iter().flat_map(|&f| libraries(layers, f)).collect();
            if level.is_empty() && early.iter().all(|f| data.contains(f)) {
                break;
            }
        }
    });
    fetched.done
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
            E::File("usr/share/zoneinfo/Etc/UTC", b"TZif2", 0o644),
            E::Link("etc/localtime", "/usr/share/zoneinfo/Etc/UTC"),
            E::File("usr/lib/locale/C.utf8/LC_CTYPE", b"ctype", 0o644),
            E::File("usr/lib/locale/de_DE.utf8/LC_CTYPE", b"de", 0o644),
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
            (&base, "usr/share/zoneinfo/Etc/UTC"),
            (&base, "usr/lib/locale/C.utf8/LC_CTYPE"),
        ]
        .into_iter()
        .chain(libraries.iter().map(|(p, _)| (&base, &p[1..])))
        {
            assert!(done.files.iter().any(|f| f == path), "{path}: {done:?}");
            assert!(cached(layer, path), "{path} not cached");
        }
        assert!(!cached(&base, "usr/share/doc/unrelated"));
        assert!(!cached(&base, "usr/lib/locale/de_DE.utf8/LC_CTYPE"));
        assert_eq!(done.files.len(), 7 + libraries.len(), "{done:?}");

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
    fn the_c_library_and_its_loader_are_fetched_with_the_program() {
        let process = ImageProcess {
            cmd: vec!["/app".into()],
            ..ImageProcess::default()
        };
        // Found through /lib64 and /lib symlinks (a merged-/usr image),
        // whatever the program turns out to be.
        let glibc = [layer(&[
            E::File("app", b"not an ELF file", 0o755),
            E::File("usr/lib64/ld-linux-x86-64.so.2", b"ld", 0o755),
            E::File("usr/lib/x86_64-linux-gnu/libc.so.6", b"libc", 0o755),
            E::File("usr/lib/x86_64-linux-gnu/libm.so.6", b"libm", 0o755),
            E::Link("lib64", "usr/lib64"),
            E::Link("lib", "usr/lib"),
            E::File("etc/ld.so.cache", b"cache", 0o644),
        ])];
        let done = prefetch(&glibc, &process, u64::MAX);
        assert_eq!(
            done.files,
            [
                "app",
                "usr/lib64/ld-linux-x86-64.so.2",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                "etc/ld.so.cache"
            ]
        );
        let musl = [layer(&[
            E::File("app", b"not an ELF file", 0o755),
            E::File("lib/ld-musl-x86_64.so.1", b"musl", 0o755),
        ])];
        let done = prefetch(&musl, &process, u64::MAX);
        assert_eq!(done.files, ["app", "lib/ld-musl-x86_64.so.1"]);
        // None in the image, none fetched.
        let bare = [layer(&[E::File("app", b"static", 0o755)])];
        assert_eq!(prefetch(&bare, &process, u64::MAX).files, ["app"]);
    }

    #[test]
    fn the_locale_comes_from_the_environment_in_glibc_spelling() {
        let ctype = |env: &[&str]| {
            let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
            locale_files(&env)[1].clone()
        };
        assert_eq!(ctype(&[]), "/usr/lib/locale/C.utf8/LC_CTYPE");
        assert_eq!(ctype(&["LANG=C"]), "/usr/lib/locale/C.utf8/LC_CTYPE");
        assert_eq!(
            ctype(&["LANG=en_US.UTF-8"]),
            "/usr/lib/locale/en_US.utf8/LC_CTYPE"
        );
        assert_eq!(
            ctype(&["LANG=en_US.UTF-8", "LC_ALL=de_DE.ISO-8859-15@euro"]),
            "/usr/lib/locale/de_DE.iso885915@euro/LC_CTYPE"
        );
        assert_eq!(
            ctype(&["LC_CTYPE=fr_FR", "LANG=en_US.UTF-8", "LC_ALL="]),
            "/usr/lib/locale/fr_FR/LC_CTYPE"
        );
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
