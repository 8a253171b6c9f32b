//! Entry ordering for the builder (spec §4): drop stale TOCs and landmarks,
//! de-duplicate names (the later copy wins, at its later position), move
//! prioritized files (with their parents and hardlink targets) to the front,
//! and insert the landmark that tells readers what to prefetch.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::tar::{clean_name, TarEntry, TarKind};
use crate::toc::TOC_NAME;

/// Name of the landmark entry placed after the prioritized files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Name of the landmark entry of a blob without prioritized files.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// Content of a landmark file.
pub const LANDMARK_CONTENT: u8 = 0x0f;

/// Bound on parent/hardlink recursion when moving a prioritized file.
const MAX_PRIORITIZE_DEPTH: usize = 4096;

/// One item of the output sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// Index into the tar index's entries.
    Entry(usize),
    /// A landmark file with the given name.
    Landmark(&'static str),
}

/// The ordered output plus the prioritized names that were not found.
pub struct Ordering {
    pub items: Vec<Item>,
    pub missed: Vec<String>,
}

/// Orders `entries` for a (non-lossless) build.
pub fn order_entries(
    entries: &[TarEntry],
    prioritized: &[String],
    allow_not_found: bool,
) -> Result<Ordering> {
    // Survivors after dropping TOC/landmarks and de-duplicating by cleaned name.
    let cleaned: Vec<String> = entries.iter().map(|e| clean_name(&e.name)).collect();
    let mut last_index: HashMap<&str, usize> = HashMap::new();
    for (i, name) in cleaned.iter().enumerate() {
        last_index.insert(name.as_str(), i);
    }
    let survivors: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            let name = cleaned[i].as_str();
            last_index[name] == i
                && name != TOC_NAME
                && name != PREFETCH_LANDMARK
                && name != NO_PREFETCH_LANDMARK
        })
        .collect();

    if prioritized.is_empty() {
        let mut items = vec![Item::Landmark(NO_PREFETCH_LANDMARK)];
        items.extend(survivors.into_iter().map(Item::Entry));
        return Ok(Ordering {
            items,
            missed: Vec::new(),
        });
    }

    let by_name: HashMap<&str, usize> = survivors
        .iter()
        .map(|&i| (cleaned[i].as_str(), i))
        .collect();
    let mut mover = Mover {
        entries,
        cleaned: &cleaned,
        by_name: &by_name,
        picked: HashSet::new(),
        moved: Vec::new(),
        visiting: HashSet::new(),
    };
    let mut missed = Vec::new();
    for raw in prioritized {
        if !mover.move_rec(&clean_name(raw)) {
            if !allow_not_found {
                return Err(Error::InvalidArgument(format!(
                    "prioritized file {raw:?} not found in the input (every parent directory must be an explicit tar entry)"
                )));
            }
            missed.push(raw.clone());
        }
    }
    let mut items: Vec<Item> = mover.moved.iter().map(|&i| Item::Entry(i)).collect();
    items.push(Item::Landmark(PREFETCH_LANDMARK));
    let picked = &mover.picked;
    items.extend(
        survivors
            .into_iter()
            .filter(|&i| !picked.contains(cleaned[i].as_str()))
            .map(Item::Entry),
    );
    Ok(Ordering { items, missed })
}

struct Mover<'a> {
    entries: &'a [TarEntry],
    cleaned: &'a [String],
    by_name: &'a HashMap<&'a str, usize>,
    picked: HashSet<&'a str>,
    moved: Vec<usize>,
    /// Guards against hardlink cycles in hostile inputs.
    visiting: HashSet<String>,
}

impl<'a> Mover<'a> {
    fn move_rec(&mut self, name: &str) -> bool {
        if name.is_empty() {
            if let Some(&i) = self.by_name.get("") {
                self.pick(i);
            }
            return true;
        }
        let Some(&i) = self.by_name.get(name) else {
            return false;
        };
        // Recursion follows path depth; real paths are far shallower than this.
        if self.visiting.len() > MAX_PRIORITIZE_DEPTH {
            return false;
        }
        if self.picked.contains(self.cleaned[i].as_str()) {
            return true;
        }
        if !self.visiting.insert(name.to_string()) {
            return false;
        }
        let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
        let mut ok = self.move_rec(parent);
        if ok && self.entries[i].kind == TarKind::Hardlink {
            ok = self.move_rec(&clean_name(&self.entries[i].link_name));
        }
        self.visiting.remove(name);
        if ok {
            self.pick(i);
        }
        ok
    }

    fn pick(&mut self, i: usize) {
        if self.picked.insert(self.cleaned[i].as_str()) {
            self.moved.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(name: &str, kind: TarKind, link: &str) -> TarEntry {
        TarEntry {
            header_start: 0,
            data_start: 0,
            size: 0,
            name: name.into(),
            link_name: link.into(),
            non_utf8_name: None,
            non_utf8_link_name: None,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            times: Default::default(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn names(entries: &[TarEntry], o: &Ordering) -> Vec<String> {
        o.items
            .iter()
            .map(|it| match it {
                Item::Entry(i) => entries[*i].name.clone(),
                Item::Landmark(n) => n.to_string(),
            })
            .collect()
    }

    #[test]
    fn no_priorities_puts_no_prefetch_landmark_first_and_dedups() {
        let es = vec![
            entry("a", TarKind::Reg, ""),
            entry(".prefetch.landmark", TarKind::Reg, ""),
            entry("b", TarKind::Reg, ""),
            entry("./a", TarKind::Reg, ""),
            entry("stargz.index.json", TarKind::Reg, ""),
        ];
        let o = order_entries(&es, &[], false).unwrap();
        assert_eq!(names(&es, &o), [".no.prefetch.landmark", "b", "./a"]);
    }

    #[test]
    fn moves_parents_and_hardlink_targets_first() {
        let es = vec![
            entry("x", TarKind::Reg, ""),
            entry("d/", TarKind::Dir, ""),
            entry("d/f", TarKind::Reg, ""),
            entry("link", TarKind::Hardlink, "d/f"),
            entry("nodir/g", TarKind::Reg, ""),
        ];
        let o = order_entries(&es, &["/link".into()], false).unwrap();
        assert_eq!(
            names(&es, &o),
            ["d/", "d/f", "link", ".prefetch.landmark", "x", "nodir/g"]
        );
        // A file whose parent has no tar entry is "not found", like upstream.
        assert!(order_entries(&es, &["nodir/g".into()], false).is_err());
        let o = order_entries(&es, &["nodir/g".into(), "../x".into()], true).unwrap();
        assert_eq!(o.missed, ["nodir/g"]);
        assert_eq!(names(&es, &o)[..2], ["x", ".prefetch.landmark"]);
    }

    #[test]
    fn hardlink_cycles_do_not_hang() {
        let es = vec![
            entry("a", TarKind::Hardlink, "b"),
            entry("b", TarKind::Hardlink, "a"),
        ];
        let o = order_entries(&es, &["a".into()], true).unwrap();
        assert_eq!(o.missed, ["a"]);
    }
}
