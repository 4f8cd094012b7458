//! The data ipcbench moves, and how the receiver knows it arrived intact.
//!
//! * [`Pool`]: pseudo-random bytes, made once before `fork` (so both processes have them).
//!   Chunk `n` is the pool's bytes from offset `(n % PATTERNS) * STRIDE`: consecutive chunks
//!   differ in every byte, so a receiver that reads a stale buffer (the chunk before, or one a
//!   ring of 2, 4 … 256 slots held earlier: `PATTERNS` is odd) sees the wrong bytes.
//! * [`Checksum`]: a Fletcher-style 64-bit sum, about as fast as adding up the words (it must
//!   not be what is measured: the receiver reads shared memory no faster than it checks it).
//!   Every byte counts, and a byte changed anywhere changes it. The receiver computes it over
//!   every byte it receives and compares it with the checksum of the chunk it expects,
//!   computed from its own copy of the pool before the clock starts.

/// How many different chunks the pool gives (odd and prime: never a multiple of a ring's
/// slot count, so a stale slot never holds what the next chunk should be).
pub const PATTERNS: usize = 17;
/// The distance in the pool between two consecutive chunks' starts (a cache line).
pub const STRIDE: usize = 64;

/// Pseudo-random bytes from which every chunk is cut (see the module docs).
#[derive(Debug, Clone)]
pub struct Pool {
    bytes: Vec<u8>,
}

impl Pool {
    /// A pool for chunks of up to `largest` bytes.
    pub fn new(largest: usize) -> Pool {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = Vec::with_capacity(largest + PATTERNS * STRIDE + 8);
        while bytes.len() < largest + PATTERNS * STRIDE {
            // xorshift64*: good enough to make consecutive chunks differ everywhere
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        Pool { bytes }
    }

    /// Chunk number `n` of `size` bytes.
    pub fn chunk(&self, n: u64, size: usize) -> &[u8] {
        let start = (n as usize % PATTERNS) * STRIDE;
        &self.bytes[start..start + size]
    }

    /// The checksums of the [`PATTERNS`] different chunks of `size` bytes, by pattern number.
    pub fn checksums(&self, size: usize) -> Vec<u64> {
        (0..PATTERNS as u64)
            .map(|n| Checksum::of(self.chunk(n, size)))
            .collect()
    }
}

/// A Fletcher-style checksum over 64-bit words in 8 independent lanes (so the compiler can use
/// vector instructions; word `i` goes to lane `i % 8`): per lane `a += word` for each word,
/// and `b += a` once per [`BLOCK`](Checksum::BLOCK), all wrapping.
/// A changed byte changes `a` (by a non-zero multiple of a power of 256); moved words change
/// `a` (into another lane) or `b` (into another block) — only words moved by a multiple of
/// 64 bytes within one 512-byte block go unseen, which no mechanism's delivery does (they
/// move whole buffers, messages and slots). [`Checksum::value`] mixes it all into one number.
///
/// A Fletcher sum proper (`b += a` after every word) costs twice the additions, and would
/// make the receiver, not the mechanism, what limits shm-spin's throughput.
///
/// Data may come in pieces ([`Checksum::update`]), as long as every piece but the last is a
/// multiple of [`Checksum::BLOCK`] bytes long: the result is then that of the whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    a: [u64; Checksum::LANES],
    b: [u64; Checksum::LANES],
    len: u64,
}

impl Checksum {
    /// The lanes: a word goes to lane (its index modulo this).
    const LANES: usize = 8;
    /// The piece size that [`Checksum::update`] needs all but the last piece to be a multiple
    /// of; `b` takes up `a` once per block.
    pub const BLOCK: usize = 512;

    /// A checksum of no bytes yet.
    pub fn new() -> Checksum {
        Checksum::default()
    }

    /// The checksum of `data` at once.
    pub fn of(data: &[u8]) -> u64 {
        let mut sum = Checksum::new();
        sum.update(data);
        sum.value()
    }

    /// Adds `data` (see the type's docs for how it may be cut into pieces).
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        let blocks = data.chunks_exact(Self::BLOCK);
        let tail = blocks.remainder();
        for block in blocks {
            self.add_block(block);
        }
        if !tail.is_empty() {
            let mut last = [0u8; Self::BLOCK];
            last[..tail.len()].copy_from_slice(tail);
            self.add_block(&last);
        }
        self.len += data.len() as u64;
    }

    #[inline(always)]
    fn add_block(&mut self, block: &[u8]) {
        for words in block.chunks_exact(8 * Self::LANES) {
            for lane in 0..Self::LANES {
                let bytes: [u8; 8] = words[lane * 8..lane * 8 + 8].try_into().unwrap_or([0; 8]);
                self.a[lane] = self.a[lane].wrapping_add(u64::from_le_bytes(bytes));
            }
        }
        for lane in 0..Self::LANES {
            self.b[lane] = self.b[lane].wrapping_add(self.a[lane]);
        }
    }

    /// The 64-bit value of everything added so far: the lanes' sums, each through a mixing
    /// bijection (splitmix64's), so that the change of `a` that a changed byte always makes
    /// cannot be undone by the change it makes to `b` (but with a chance of about 2^-64).
    pub fn value(&self) -> u64 {
        let mix = |mut x: u64| {
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        let mut value = mix(self.len);
        for lane in 0..Self::LANES {
            value = mix(value ^ self.a[lane]);
            value = mix(value ^ self.b[lane]);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_single_byte_change_is_seen() {
        let pool = Pool::new(4096);
        let data = pool.chunk(0, 1000).to_vec();
        let good = Checksum::of(&data);
        for at in 0..data.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[at] ^= flip;
                assert_ne!(Checksum::of(&bad), good, "byte {at} ^ {flip:#x} unseen");
            }
        }
    }

    #[test]
    fn pieces_of_whole_blocks_sum_like_the_whole() {
        let pool = Pool::new(70_000);
        let data = pool.chunk(3, 65_536 + 17);
        let mut sum = Checksum::new();
        for piece in data.chunks(8192) {
            sum.update(piece);
        }
        assert_eq!(sum.value(), Checksum::of(data));
    }

    #[test]
    fn consecutive_chunks_differ_in_every_byte_and_in_their_checksums() {
        let pool = Pool::new(4096);
        let sums = pool.checksums(4096);
        for n in 0..PATTERNS as u64 {
            let (this, next) = (pool.chunk(n, 4096), pool.chunk(n + 1, 4096));
            let same = this.iter().zip(next).filter(|(a, b)| a == b).count();
            assert!(same < 64, "chunks {n} and {} share {same} bytes", n + 1);
            assert_ne!(sums[n as usize], sums[(n as usize + 1) % PATTERNS]);
        }
        assert_eq!(pool.chunk(PATTERNS as u64, 64), pool.chunk(0, 64));
        // a zero-length tail or moved words are seen too
        assert_ne!(Checksum::of(&[0; 32]), Checksum::of(&[0; 64]));
        let mut moved = pool.chunk(0, 64).to_vec();
        moved.rotate_left(8);
        assert_ne!(Checksum::of(&moved), Checksum::of(pool.chunk(0, 64)));
    }

    #[test]
    fn pieces_delivered_out_of_order_are_seen() {
        let pool = Pool::new(1 << 16);
        let data = pool.chunk(5, 1 << 16);
        let good = Checksum::of(data);
        // two blocks, two messages of msgmax, two bytes swapped
        for piece in [Checksum::BLOCK, 8192, 1] {
            let mut swapped = data.to_vec();
            let (first, rest) = swapped.split_at_mut(piece);
            first.swap_with_slice(&mut rest[..piece]);
            assert_ne!(Checksum::of(&swapped), good, "{piece}-byte pieces swapped");
        }
    }
}
