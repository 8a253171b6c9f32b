//! Which layer served each recorded file. overlayfs opens a file in the
//! topmost layer that has it, so a lower layer's copy of a path that an
//! upper layer holds, whites out or hides under an opaque directory or a
//! non-directory was never read: it must not be prioritized.

use std::collections::HashSet;

use estargz_core::{EntryType, Reader};

use crate::overlay::{OPAQUE_MARKER, WHITEOUT_PREFIX};

fn kind(r: &Reader, path: &str) -> Option<EntryType> {
    let id = r.lookup(path).ok()?;
    Some(r.entry(r.resolve(id)).kind())
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "" => name.to_string(),
        d => format!("{d}/{name}"),
    }
}

/// Whether `upper` hides `path` of a layer below it.
pub fn hides(upper: &Reader, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut dir = String::new();
    for (i, name) in parts.iter().enumerate() {
        if kind(upper, &join(&dir, &format!("{WHITEOUT_PREFIX}{name}"))).is_some() {
            return true;
        }
        let here = join(&dir, name);
        let last = i + 1 == parts.len();
        match kind(upper, &here) {
            Some(_) if last => return true,
            // An opaque directory hides everything below it.
            Some(EntryType::Dir) if kind(upper, &join(&here, OPAQUE_MARKER)).is_some() => {
                return true
            }
            Some(EntryType::Dir) | None => {}
            // A file, link or device where a directory was.
            Some(_) => return true,
        }
        dir = here;
    }
    false
}

/// `recorded[i]`: paths recorded in layer i (0 = bottom) of `layers`.
/// Keeps, in order and once each, the paths that are regular files of
/// their layer and hidden by no layer above it.
pub fn attribute(layers: &[&Reader], recorded: &[Vec<String>]) -> Vec<Vec<String>> {
    recorded
        .iter()
        .enumerate()
        .map(|(i, paths)| {
            let mut seen = HashSet::new();
            paths
                .iter()
                .filter(|p| {
                    kind(layers[i], p) == Some(EntryType::Reg)
                        && !layers[i + 1..].iter().any(|u| hides(u, p))
                        && seen.insert(p.to_string())
                })
                .cloned()
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz_core::testing::{entry_headers, HeaderSpec};
    use estargz_core::{build, BuildInput, BuildOptions, OpenOptions};
    use std::sync::Arc;

    fn layer(entries: &[(&str, u8)]) -> Reader {
        let mut tar = Vec::new();
        for (name, typeflag) in entries {
            tar.extend(entry_headers(&HeaderSpec {
                name: name.to_string(),
                typeflag: *typeflag,
                mode: 0o755,
                link_name: if *typeflag == b'2' {
                    "x".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }));
        }
        tar.extend([0; 1024]);
        let mut blob = Vec::new();
        build(
            BuildInput::Reader(Box::new(std::io::Cursor::new(tar))),
            &mut blob,
            &BuildOptions::default(),
        )
        .unwrap();
        Reader::open(Arc::new(blob), &OpenOptions::default()).unwrap()
    }

    #[test]
    fn upper_layers_hide_what_overlayfs_would_not_open_below() {
        let lower = layer(&[
            ("usr/", b'5'),
            ("usr/lib/", b'5'),
            ("usr/lib/a", b'0'),
            ("usr/lib/b", b'0'),
            ("usr/lib/c", b'0'),
            ("opt/", b'5'),
            ("opt/x/", b'5'),
            ("opt/x/f", b'0'),
            ("srv/", b'5'),
            ("srv/g", b'0'),
            ("var/", b'5'),
            ("var/h", b'0'),
            ("keep", b'0'),
            ("dir/", b'5'),
        ]);
        let upper = layer(&[
            ("usr/", b'5'),
            ("usr/lib/", b'5'),
            ("usr/lib/a", b'0'),     // shadowed copy
            ("usr/lib/.wh.b", b'0'), // whiteout
            ("opt/", b'5'),
            ("opt/x/", b'5'),
            ("opt/x/.wh..wh..opq", b'0'), // opaque directory
            ("srv", b'2'),                // a symlink where a directory was
            ("top", b'0'),
        ]);
        let recorded = vec![
            vec![
                "usr/lib/a",
                "usr/lib/b",
                "usr/lib/c",
                "opt/x/f",
                "srv/g",
                "var/h",
                "keep",
                "keep",
                "missing",
                "dir",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec!["top".to_string(), "usr/lib/a".to_string()],
        ];
        let out = attribute(&[&lower, &upper], &recorded);
        assert_eq!(out[0], ["usr/lib/c", "var/h", "keep"]);
        assert_eq!(out[1], ["top", "usr/lib/a"]);
    }
}
