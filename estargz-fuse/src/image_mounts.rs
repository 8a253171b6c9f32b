//! The images whose layers this process mounts one by one (the C ABI's
//! mounts, so the snapshotter's): once every layer of an image is mounted,
//! its command is prefetched ([`crate::command_prefetch`]), as the store
//! does for the layers it serves. The image (manifest and config) comes
//! from [`crate::ahead::open_mounts_ahead`], which fetches it anyway; each
//! mount reports its layer as it starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use estargz_core::remote::Image;
use estargz_core::Reader;

use crate::warm::{WarmOptions, Warmer};

/// Images followed at once; the oldest goes first.
const MAX_IMAGES: usize = 64;
/// How long an image is followed (and its command not prefetched again).
const IMAGE_TTL: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Followed {
    image: Option<Arc<Image>>,
    /// Mounted layers by digest (gone when their mount is).
    layers: HashMap<String, Weak<Reader>>,
    /// How the mounts warm their layers (the last mount's).
    warm: Option<WarmOptions>,
    since: Option<Instant>,
    prefetched: bool,
}

/// A command prefetch ready to start.
struct Ready {
    what: String,
    layers: Vec<Arc<Reader>>,
    config: Vec<u8>,
    warm: WarmOptions,
}

impl Followed {
    /// The image's layers (topmost first) when all are mounted and the
    /// config is known, once.
    fn ready(&mut self, reference: &str) -> Option<Ready> {
        if self.prefetched {
            return None;
        }
        let image = self.image.as_ref()?;
        let layers: Vec<Arc<Reader>> = image
            .manifest
            .layers
            .iter()
            .rev()
            .map(|d| self.layers.get(&d.digest).and_then(Weak::upgrade))
            .collect::<Option<_>>()?;
        // Copied only once the prefetch is due, not on every mount.
        let (config, warm) = (image.config.clone()?, self.warm.clone()?);
        self.prefetched = true;
        Some(Ready {
            what: format!("image {reference}"),
            layers,
            config,
            warm,
        })
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct ImageMounts {
    table: Mutex<HashMap<String, Followed>>,
}

/// The process's table.
pub fn image_mounts() -> &'static ImageMounts {
    static TABLE: OnceLock<ImageMounts> = OnceLock::new();
    TABLE.get_or_init(ImageMounts::default)
}

impl ImageMounts {
    /// `image` (with its config) of `reference` is known.
    pub fn image_known(&self, reference: &str, image: Arc<Image>) {
        self.update(reference, |f| f.image = Some(image));
    }

    /// Layer `digest` of `reference` is mounted over `reader`, warmed as
    /// `warm` says.
    pub fn layer_mounted(
        &self,
        reference: &str,
        digest: &str,
        reader: &Arc<Reader>,
        warm: &WarmOptions,
    ) {
        self.update(reference, |f| {
            f.layers.insert(digest.to_string(), Arc::downgrade(reader));
            f.warm = Some(warm.clone());
        });
    }

    fn update(&self, reference: &str, change: impl FnOnce(&mut Followed)) {
        let ready = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table.retain(|_, f| f.since.is_none_or(|t| t.elapsed() < IMAGE_TTL));
            if !table.contains_key(reference) && table.len() >= MAX_IMAGES {
                let oldest = table
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    table.remove(&k);
                }
            }
            let followed = table.entry(reference.to_string()).or_default();
            followed.since.get_or_insert_with(Instant::now);
            change(followed);
            followed.ready(reference)
        };
        if let Some(r) = ready {
            Warmer::shared(r.warm).prefetch_command(r.what, r.layers, &r.config);
        }
    }

    /// Images followed now (for tests).
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use estargz_core::remote::manifest::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
    use estargz_core::remote::{Descriptor, Manifest, Reference};

    use super::*;
    use crate::test_layers::{cached, layer, E};

    fn descriptor(media_type: &str, digest: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size: 1,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// An image of layers "sha256:…0" (bottom) and "sha256:…1" whose
    /// config runs `cmd`.
    fn image(reference: &str, cmd: &str) -> Arc<Image> {
        let config = serde_json::to_vec(&serde_json::json!({"config": {"Cmd": [cmd]}})).unwrap();
        Arc::new(Image {
            reference: Reference::parse(reference).unwrap(),
            requested: Reference::parse(reference).unwrap(),
            manifest: Manifest {
                schema_version: 2,
                media_type: OCI_MANIFEST.into(),
                config: descriptor(OCI_CONFIG, &format!("sha256:{}", "c".repeat(64))),
                layers: (0..2)
                    .map(|i| descriptor(OCI_LAYER_GZIP, &digest(i)))
                    .collect(),
                annotations: BTreeMap::new(),
            },
            manifest_digest: format!("sha256:{}", "e".repeat(64)),
            config: Some(config),
        })
    }

    fn digest(i: usize) -> String {
        format!("sha256:{}{i}", "0".repeat(63))
    }

    fn warm() -> WarmOptions {
        WarmOptions {
            prefetch: true,
            ..WarmOptions::default()
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_command_is_prefetched_once_every_layer_is_mounted_in_any_order() {
        let table = ImageMounts::default();
        let base = layer(&[
            E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
            E::File("usr/bin/run", b"#!/usr/bin/interp\n", 0o755),
        ]);
        let top = layer(&[
            E::File("usr/bin/interp", b"not a program", 0o755),
            E::File("usr/bin/run", b"#!/usr/bin/interp\n", 0o755),
        ]);
        // The config first, then the layers; the top layer's `run` hides
        // the base layer's.
        let reference = "127.0.0.1:5000/a/b:first";
        table.image_known(reference, image(reference, "run"));
        table.layer_mounted(reference, &digest(1), &top, &warm());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!cached(&top, "usr/bin/run"), "one layer of two");
        table.layer_mounted(reference, &digest(0), &base, &warm());
        wait_for("prefetch", || {
            cached(&top, "usr/bin/run")
                && cached(&top, "usr/bin/interp")
                && cached(&base, "etc/passwd")
        });
        assert!(!cached(&base, "usr/bin/run"), "hidden by the top layer");

        // The layers first, then the config; an image is prefetched once.
        let (base, top) = (
            layer(&[E::File("etc/passwd", b"root\n", 0o644)]),
            layer(&[E::File("usr/bin/run", b"x", 0o755)]),
        );
        let reference = "127.0.0.1:5000/a/b:second";
        table.layer_mounted(reference, &digest(0), &base, &warm());
        table.layer_mounted(reference, &digest(1), &top, &warm());
        table.image_known(reference, image(reference, "/usr/bin/run"));
        wait_for("prefetch", || {
            cached(&top, "usr/bin/run") && cached(&base, "etc/passwd")
        });
        let again = layer(&[E::File("usr/bin/run", b"y", 0o755)]);
        table.layer_mounted(reference, &digest(1), &again, &warm());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!cached(&again, "usr/bin/run"), "prefetched twice");
    }

    #[test]
    fn unmounted_layers_prefetch_off_and_many_images_leave_nothing_to_do() {
        let table = ImageMounts::default();
        let reference = "127.0.0.1:5000/a/b:gone";
        let top = layer(&[E::File("usr/bin/run", b"x", 0o755)]);
        table.layer_mounted(reference, &digest(1), &top, &warm());
        {
            // A layer whose mount went away does not count.
            let base = layer(&[E::File("etc/passwd", b"root\n", 0o644)]);
            table.layer_mounted(reference, &digest(0), &base, &warm());
        }
        table.image_known(reference, image(reference, "run"));
        let off = layer(&[E::File("usr/bin/run", b"x", 0o755)]);
        let reference = "127.0.0.1:5000/a/b:off";
        let no_prefetch = WarmOptions::default();
        table.image_known(reference, image(reference, "run"));
        table.layer_mounted(reference, &digest(0), &off, &no_prefetch);
        table.layer_mounted(reference, &digest(1), &off, &no_prefetch);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!cached(&top, "usr/bin/run"));
        assert!(!cached(&off, "usr/bin/run"));
        // The table is bounded.
        for i in 0..(MAX_IMAGES + 10) {
            let reference = format!("127.0.0.1:5000/many:{i}");
            table.image_known(&reference, image(&reference, "run"));
        }
        assert_eq!(table.len(), MAX_IMAGES);
    }
}
