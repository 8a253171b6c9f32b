//! Content-defined chunking of file payloads for zstd:chunked v2, with the
//! boundaries containers/storage chooses, so chunks of files shared with
//! its layers have the same digests (it deduplicates by chunk digest).
//!
//! Facts (containers/storage `pkg/chunked/compressor`): a bup-style rolling
//! checksum over a 64-byte window, one per file, fed every payload byte; a
//! chunk ends after a byte that leaves the low 16 bits of the second sum all
//! ones. A run of at least 1 KiB of zeros (the longest such run) is a chunk
//! of its own of type `zeros`: the bytes before it end a data chunk, and
//! its zeros go through the checksum without ending chunks inside it.
//! Shorter zero runs are ordinary bytes.

/// Window of the rolling checksum (a power of two).
const WINDOW: usize = 64;
/// Added to every byte (bup's `ROLLSUM_CHAR_OFFSET`).
const CHAR_OFFSET: u32 = 31;
/// A chunk ends where this many low bits of `s2` are all ones.
const SPLIT_BITS: u32 = 16;
/// Zero runs at least this long become `zeros` chunks.
pub const HOLE_THRESHOLD: u64 = 1 << 10;

/// The rolling checksum.
struct RollSum {
    s1: u32,
    s2: u32,
    window: [u8; WINDOW],
    pos: usize,
}

impl RollSum {
    fn new() -> Self {
        RollSum {
            s1: WINDOW as u32 * CHAR_OFFSET,
            s2: WINDOW as u32 * (WINDOW as u32 - 1) * CHAR_OFFSET,
            window: [0; WINDOW],
            pos: 0,
        }
    }

    fn roll(&mut self, byte: u8) {
        let drop = u32::from(self.window[self.pos]);
        self.s1 = self.s1.wrapping_add(u32::from(byte)).wrapping_sub(drop);
        self.s2 = self
            .s2
            .wrapping_add(self.s1)
            .wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET));
        self.window[self.pos] = byte;
        self.pos = (self.pos + 1) & (WINDOW - 1);
    }

    /// Rolls `n` zeros in constant time once the window is all zeros: `s1`
    /// then stays put and `s2` grows by the same amount per byte.
    fn roll_zeros(&mut self, n: u64) {
        let first = n.min(WINDOW as u64);
        for _ in 0..first {
            self.roll(0);
        }
        let rest = n - first;
        let step = self
            .s1
            .wrapping_sub((WINDOW as u32).wrapping_mul(CHAR_OFFSET));
        // Wrapping arithmetic mod 2^32: only the low 32 bits of `rest` matter.
        self.s2 = self.s2.wrapping_add(step.wrapping_mul(rest as u32));
        self.pos = (self.pos + (rest % WINDOW as u64) as usize) & (WINDOW - 1);
    }

    fn on_split(&self) -> bool {
        let mask = (1u32 << SPLIT_BITS) - 1;
        self.s2 & mask == mask
    }
}

/// One chunk of a file: offset in the file, length, and whether it is zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub len: u64,
    pub zeros: bool,
}

/// Cuts one file's payload, fed in any slices, into [`Piece`]s.
pub struct Chunker {
    sum: RollSum,
    pieces: Vec<Piece>,
    /// File offset of the first byte not yet in a piece.
    start: u64,
    /// File offset of the next byte fed.
    pos: u64,
    /// Zeros seen right before `pos` and not yet classified.
    zero_run: u64,
}

impl Chunker {
    pub fn new() -> Self {
        Chunker {
            sum: RollSum::new(),
            pieces: Vec::new(),
            start: 0,
            pos: 0,
            zero_run: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            if self.zero_run > 0 || rest[0] == 0 {
                let zeros = rest.iter().take_while(|&&b| b == 0).count();
                self.zero_run += zeros as u64;
                self.pos += zeros as u64;
                rest = &rest[zeros..];
                if rest.is_empty() {
                    break;
                }
                self.end_zero_run();
            }
            // Data bytes up to the next zero, split-checked one by one.
            let data_len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            for &b in &rest[..data_len] {
                self.pos += 1;
                self.data_byte(b);
            }
            rest = &rest[data_len..];
        }
    }

    /// The pieces of the whole payload.
    pub fn finish(mut self) -> Vec<Piece> {
        self.end_zero_run();
        self.cut(self.pos, false);
        self.pieces
    }

    fn data_byte(&mut self, b: u8) {
        self.sum.roll(b);
        if self.sum.on_split() {
            self.cut(self.pos, false);
        }
    }

    /// Classifies the zero run that ends at `pos`.
    fn end_zero_run(&mut self) {
        let n = std::mem::take(&mut self.zero_run);
        if n >= HOLE_THRESHOLD {
            let hole_start = self.pos - n;
            self.cut(hole_start, false);
            self.sum.roll_zeros(n);
            self.cut(self.pos, true);
            return;
        }
        // Short runs are data: replay them at their place in the stream.
        let end = self.pos;
        self.pos -= n;
        for _ in 0..n {
            self.pos += 1;
            self.data_byte(0);
        }
        debug_assert_eq!(self.pos, end);
    }

    fn cut(&mut self, end: u64, zeros: bool) {
        if end > self.start {
            self.pieces.push(Piece {
                offset: self.start,
                len: end - self.start,
                zeros,
            });
            self.start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(data: &[u8], step: usize) -> Vec<Piece> {
        let mut c = Chunker::new();
        for part in data.chunks(step.max(1)) {
            c.feed(part);
        }
        c.finish()
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // No zeros (the test places its own), and not `| 1`: odd
                // bytes only would keep s2 even, which never splits.
                ((x >> 24) as u8).max(1)
            })
            .collect()
    }

    #[test]
    fn pieces_tile_the_payload_and_do_not_depend_on_how_it_is_fed() {
        let mut data = noise(700_000, 7);
        data[1000..5000].fill(0); // a hole
        data[9000..9500].fill(0); // too short to be one
        data.extend(std::iter::repeat_n(0, 3000)); // a hole at the end
        let p = pieces(&data, 1 << 20);
        let mut at = 0;
        for piece in &p {
            assert_eq!(piece.offset, at);
            assert!(piece.len > 0);
            let bytes = &data[at as usize..(at + piece.len) as usize];
            if piece.zeros {
                assert!(piece.len >= HOLE_THRESHOLD && bytes.iter().all(|&b| b == 0));
            }
            at += piece.len;
        }
        assert_eq!(at, data.len() as u64);
        assert!(p.iter().filter(|p| p.zeros).count() == 2, "{p:?}");
        assert_eq!(p.iter().find(|p| p.zeros).unwrap().offset, 1000);
        // ~64 KiB average: several data chunks in 700 KB of noise.
        assert!(p.iter().filter(|p| !p.zeros).count() > 4, "{p:?}");
        for step in [1, 3, 511, 4096] {
            assert_eq!(pieces(&data, step), p, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn constant_time_zero_rolling_matches_byte_by_byte() {
        for n in [0u64, 1, 63, 64, 65, 1000, 70_000] {
            let mut a = RollSum::new();
            let mut b = RollSum::new();
            for &x in &noise(100, n) {
                a.roll(x);
                b.roll(x);
            }
            a.roll_zeros(n);
            for _ in 0..n {
                b.roll(0);
            }
            assert_eq!((a.s1, a.s2, a.pos, a.window), (b.s1, b.s2, b.pos, b.window));
        }
    }

    #[test]
    fn empty_and_all_zero_payloads() {
        assert!(pieces(&[], 10).is_empty());
        assert_eq!(
            pieces(&[0; 2000], 7),
            [Piece {
                offset: 0,
                len: 2000,
                zeros: true
            }]
        );
        assert_eq!(
            pieces(&[0; 10], 7),
            [Piece {
                offset: 0,
                len: 10,
                zeros: false
            }]
        );
    }
}
