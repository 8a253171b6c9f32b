//! Sequential reads of `blob` (podman save / push copy it front to back in
//! kernel-sized pieces) fetched in large windows, so a layer costs a few
//! range requests instead of one per 128 KiB.

use std::io;
use std::sync::{Arc, Mutex};

use estargz_core::ReadAt;

/// Bytes fetched per window.
pub const WINDOW: u64 = 4 << 20;

pub struct Windowed {
    inner: Arc<dyn ReadAt>,
    window: u64,
    /// The last window: start offset and bytes.
    last: Mutex<Option<(u64, Arc<[u8]>)>>,
}

impl Windowed {
    pub fn new(inner: Arc<dyn ReadAt>, window: u64) -> Windowed {
        Windowed {
            inner,
            window: window.max(1),
            last: Mutex::new(None),
        }
    }
}

impl ReadAt for Windowed {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.inner.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        if buf.len() as u64 >= self.window {
            return self.inner.read_at(buf, offset);
        }
        let cached = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|(start, data)| offset >= *start && offset < start + data.len() as u64);
        let (start, data) = match cached {
            Some(w) => w,
            None => {
                // Fetched without the lock: other readers are not held up.
                let len = self.window.min(size - offset) as usize;
                let mut data = vec![0; len];
                self.inner.read_exact_at(&mut data, offset)?;
                let w = (offset, Arc::<[u8]>::from(data));
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(w.clone());
                w
            }
        };
        let from = (offset - start) as usize;
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        if from + n == data.len() {
            // Read to its end: a sequential reader moves on, and a layer
            // kept in use for months should not pin 4 MiB per blob.
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .as_ref()
                .is_some_and(|(s, d)| *s == start && Arc::ptr_eq(d, &data))
            {
                *last = None;
            }
        }
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting(Vec<u8>, AtomicUsize);

    impl ReadAt for Counting {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.read_at(buf, offset)
        }
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
    }

    #[test]
    fn sequential_reads_share_windows_and_bytes_are_exact() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let src = Arc::new(Counting(data.clone(), AtomicUsize::new(0)));
        let w = Windowed::new(src.clone(), 1000);
        let mut out = Vec::new();
        let mut buf = [0u8; 300];
        loop {
            let n = w.read_at(&mut buf, out.len() as u64).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(src.1.load(Ordering::SeqCst), 10, "one fetch per window");
        assert!(
            w.last.lock().unwrap().is_none(),
            "a fully read window is let go"
        );
        // Random and large reads are exact too.
        let mut big = vec![0u8; 2500];
        assert_eq!(w.read_at(&mut big, 5000).unwrap(), 2500);
        assert_eq!(&big[..], &data[5000..7500]);
        let mut small = [0u8; 10];
        assert_eq!(w.read_at(&mut small, 9995).unwrap(), 5);
        assert_eq!(&small[..5], &data[9995..]);
        assert_eq!(w.read_at(&mut small, 10_000).unwrap(), 0);
    }
}
