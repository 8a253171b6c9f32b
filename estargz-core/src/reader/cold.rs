//! Which bytes of a layer a container start is unlikely to read: the
//! background fetch brings them last, so the bytes a start does read
//! arrive sooner. Only the order changes; every byte is still fetched.
//!
//! Two kinds of files count as cold: documentation and package-manager
//! state (read by people and package managers, not by a starting
//! program), and Python sources next to their byte-compiled modules
//! (CPython checks a source's size and time with `stat` and reads the
//! `__pycache__/*.pyc`, not the source). A workload that reads a cold
//! file anyway (a walk over every file) turns the order back to blob order.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Index, NodeId, Reader, ROOT};
use crate::source::push_joined;
use crate::toc::EntryType;

/// Directories (and everything under them) a start rarely reads.
const COLD_DIRS: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/include",
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache/apt",
    "var/cache/debconf",
    "var/lib/rpm",
    "var/cache/dnf",
    "lib/apk/db",
];

/// Hot ranges closer than this are fetched as one (the cold bytes between
/// them come along): fewer ranges per request for a few KiB more.
pub(super) const HOT_MERGE_GAP: u64 = 16 << 10;

/// A layer's cold files, and whether a read has touched one.
pub(super) struct Cold {
    /// Sorted.
    nodes: Vec<NodeId>,
    ranges: Vec<Range<u64>>,
    read: AtomicBool,
}

impl Reader {
    /// The compressed ranges (sorted, disjoint) holding only cold files,
    /// for the background fetch to take last; none once a read touched a
    /// cold file (this workload reads them: blob order serves it better).
    pub(super) fn cold_ranges(&self) -> &[Range<u64>] {
        let cold = self.cold.get_or_init(|| {
            let nodes = cold_nodes(self.index());
            Cold {
                ranges: self.ranges_of_only(&nodes),
                nodes,
                read: AtomicBool::new(false),
            }
        });
        if cold.read.load(Ordering::Relaxed) {
            &[]
        } else {
            &cold.ranges
        }
    }

    /// Notes a read of file `id` (a data node) for [`Reader::cold_ranges`].
    pub(super) fn note_read(&self, id: NodeId) {
        if let Some(cold) = self.cold.get() {
            if !cold.read.load(Ordering::Relaxed) && cold.nodes.binary_search(&id).is_ok() {
                cold.read.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The compressed ranges (sorted, disjoint) of the members whose
    /// chunks all belong to `nodes` (sorted).
    fn ranges_of_only(&self, nodes: &[NodeId]) -> Vec<Range<u64>> {
        let work = self.chunks_in_blob_order(|_, c| !c.zeros);
        let mut out: Vec<Range<u64>> = Vec::new();
        for member in super::members_of(&work) {
            if member.iter().all(|(id, _)| nodes.binary_search(id).is_ok()) {
                let r = member[0].1.offset..member[0].1.next_offset;
                push_joined(&mut out, r, 0);
            }
        }
        out
    }
}

/// The regular files that count as cold, sorted.
fn cold_nodes(index: &Index) -> Vec<NodeId> {
    let mut cold = Vec::new();
    // Every node under a cold directory, walked once each (a tree).
    let mut stack: Vec<NodeId> = COLD_DIRS
        .iter()
        .filter_map(|p| index.lookup(p))
        .filter(|&id| index.entry(id).kind() == EntryType::Dir)
        .collect();
    while let Some(dir) = stack.pop() {
        for (_, child) in index.entry(dir).children() {
            match index.entry(child).kind() {
                EntryType::Dir => stack.push(child),
                _ => cold.push(child),
            }
        }
    }
    // (directory, module name) of every byte-compiled module.
    let mut compiled: HashSet<(NodeId, &str)> = HashSet::new();
    for e in index.entries() {
        if e.kind() != EntryType::Dir || e.name() != "__pycache__" || e.id() == ROOT {
            continue;
        }
        for (name, _) in e.children() {
            if let Some(stem) = name.strip_suffix(".pyc").and_then(|n| n.split('.').next()) {
                compiled.insert((e.parent(), stem));
            }
        }
    }
    if !compiled.is_empty() {
        for e in index.entries() {
            if let Some(stem) = e.name().strip_suffix(".py") {
                if e.kind() == EntryType::Reg && compiled.contains(&(e.parent(), stem)) {
                    cold.push(e.id());
                }
            }
        }
    }
    // A `.py` under a cold directory was found both ways.
    cold.sort_unstable();
    cold.dedup();
    cold
}

/// `missing` without `cold` (both sorted and disjoint), pieces closer than
/// [`HOT_MERGE_GAP`] joined.
pub(super) fn without(missing: &[Range<u64>], cold: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut c = 0;
    for m in missing {
        // Cold ranges ending before `m` are behind every later range too.
        while c < cold.len() && cold[c].end <= m.start {
            c += 1;
        }
        let mut start = m.start;
        for x in cold[c..].iter().take_while(|x| x.start < m.end) {
            if x.start > start {
                push_joined(&mut out, start..x.start, HOT_MERGE_GAP);
            }
            start = start.max(x.end);
        }
        if start < m.end {
            push_joined(&mut out, start..m.end, HOT_MERGE_GAP);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, end: u64) -> Range<u64> {
        start..end
    }

    #[test]
    fn docs_and_compiled_python_sources_are_cold() {
        use crate::build::{build, BuildInput, BuildOptions};
        let files = [
            ("usr/bin/tool", true),
            ("usr/share/doc/tool/README", false),
            ("usr/lib/py/mod.py", false),
            ("usr/lib/py/__pycache__/mod.cpython-311.pyc", true),
            ("usr/lib/py/lonely.py", true),
            ("var/lib/dpkg/status", false),
        ];
        let mut tar = Vec::new();
        for (i, (name, _)) in files.iter().enumerate() {
            tar.extend_from_slice(&crate::tarwrite::simple_file_header(name, 4096));
            tar.extend_from_slice(&[i as u8 + 1; 4096]);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        let mut blob = Vec::new();
        let input = BuildInput::Reader(Box::new(std::io::Cursor::new(tar)));
        build(input, &mut blob, &BuildOptions::default()).unwrap();
        let reader = Reader::open(std::sync::Arc::new(blob), &Default::default()).unwrap();
        let cold = reader.cold_ranges().to_vec();
        assert!(!cold.is_empty());
        for (name, hot) in files {
            let id = reader.lookup(name).unwrap();
            let c = &reader.entry(id).chunks()[0];
            let in_cold = cold
                .iter()
                .any(|r| r.start <= c.offset && c.next_offset <= r.end);
            assert_eq!(in_cold, !hot, "{name}");
        }
        // A hot read changes nothing; a read of a cold file turns blob
        // order back on.
        let mut buf = [0u8; 16];
        let tool = reader.lookup("usr/bin/tool").unwrap();
        reader.read_at(tool, 0, &mut buf).unwrap();
        assert_eq!(reader.cold_ranges().len(), cold.len());
        let readme = reader.lookup("usr/share/doc/tool/README").unwrap();
        reader.read_at(readme, 0, &mut buf).unwrap();
        assert!(reader.cold_ranges().is_empty());
    }

    #[test]
    fn without_cuts_cold_out_and_joins_close_pieces() {
        let g = HOT_MERGE_GAP;
        // Cold in the middle, far apart: two pieces.
        assert_eq!(
            without(&[span(0, 10 * g)], &[span(2 * g, 5 * g)]),
            vec![span(0, 2 * g), span(5 * g, 10 * g)]
        );
        // A small cold gap is fetched along.
        assert_eq!(
            without(&[span(0, 10 * g)], &[span(g, g + 10)]),
            vec![span(0, 10 * g)]
        );
        // All cold: nothing hot.
        assert_eq!(without(&[span(5, 50)], &[span(0, 100)]), vec![]);
        // Cold ranges spanning several missing ranges, and none at all.
        assert_eq!(
            without(
                &[span(0, 10), span(4 * g, 6 * g), span(8 * g, 9 * g)],
                &[span(5, 5 * g)]
            ),
            vec![span(0, 5), span(5 * g, 6 * g), span(8 * g, 9 * g)]
        );
        assert_eq!(
            without(&[span(0, 10), span(20, 30)], &[]),
            vec![span(0, 30)]
        );
    }
}
