//! The kernel's random source: ChaCha20 seeded from RDSEED/RDRAND (mixed
//! with the TSC), used for `getrandom` and `/dev/urandom`.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use spin::Mutex;

static RNG: Mutex<Option<ChaCha20Rng>> = Mutex::new(None);

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    for (i, chunk) in s.chunks_mut(8).enumerate() {
        let hw = crate::arch::x86_64::cpu::hardware_random().unwrap_or(0);
        let t = crate::arch::x86_64::cpu::rdtsc().rotate_left(17 * i as u32 + 5);
        chunk.copy_from_slice(&(hw ^ t).to_le_bytes());
    }
    s
}

/// Fill `out` with cryptographically strong random bytes.
pub fn fill(out: &mut [u8]) {
    let mut g = RNG.lock();
    let rng = g.get_or_insert_with(|| ChaCha20Rng::from_seed(seed()));
    rng.fill_bytes(out);
}
