//! SHA-1 of a whole buffer: every piece check, the info hash, `create`.
//!
//! A leech hashes every byte it receives on its one thread, so SHA-1 bounds its rate. sha1_smol is portable Rust
//! (about 470 MB/s on the 2-core EPYC we measure on). Most x86-64 CPUs of the last years (AMD since Zen, Intel since
//! Ice Lake / Goldmont) have the SHA extensions, which do four SHA-1 rounds per instruction; libtorrent gets them
//! through OpenSSL. We use them through `std::arch` when the CPU reports them at run time, and sha1_smol otherwise,
//! so no new dependency and the same binary runs everywhere. `TOYBT_SHA1=portable` in the environment forces
//! sha1_smol, to measure what the rest of the program costs without the fast path.

use std::sync::OnceLock;

/// SHA-1 digest of `data`.
pub fn digest(data: &[u8]) -> [u8; 20] {
    #[cfg(target_arch = "x86_64")]
    if uses_sha_extensions() {
        // SAFETY: the CPU has the SHA, SSSE3 and SSE4.1 instructions the function is compiled for (checked at run
        // time by `uses_sha_extensions`).
        return unsafe { shani::digest(data) };
    }
    portable(data)
}

/// sha1_smol's digest, whatever the CPU offers.
pub fn portable(data: &[u8]) -> [u8; 20] {
    sha1_smol::Sha1::from(data).digest().bytes()
}

/// Which implementation `digest` uses, for start-up logs and benches.
pub fn implementation() -> &'static str {
    if uses_sha_extensions() { "x86 SHA extensions" } else { "sha1_smol (portable)" }
}

fn uses_sha_extensions() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let forced_portable = std::env::var_os("TOYBT_SHA1").is_some_and(|v| v == "portable");
        !forced_portable && cpu_has_sha_extensions()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_sha_extensions() -> bool {
    is_x86_feature_detected!("sha") && is_x86_feature_detected!("ssse3") && is_x86_feature_detected!("sse4.1")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_sha_extensions() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    const INITIAL: [u32; 5] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476, 0xc3d2_e1f0];

    /// SHA-1 (FIPS 180-4) with the message padded here: the whole 64-byte blocks straight from `data`, then the tail
    /// with its 0x80 byte, zeros and the length in bits, in one or two blocks.
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    pub fn digest(data: &[u8]) -> [u8; 20] {
        let mut state = INITIAL;
        let whole = data.len() - data.len() % 64;
        compress(&mut state, &data[..whole]);

        let rest = &data[whole..];
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_len = if rest.len() < 56 { 64 } else { 128 };
        let bits = (data.len() as u64).wrapping_mul(8);
        tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
        compress(&mut state, &tail[..tail_len]);

        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Runs the compression function over `blocks` (a multiple of 64 bytes). The state is held as A..D in one
    /// register (A in the top lane) and E in the top lane of another, the layout the SHA instructions use.
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn compress(state: &mut [u32; 5], blocks: &[u8]) {
        // Message words are big-endian; reversing all 16 bytes puts word 0 in the top lane, as A is.
        let byte_swap = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
        let mut abcd = _mm_set_epi32(state[0] as i32, state[1] as i32, state[2] as i32, state[3] as i32);
        let mut e = _mm_set_epi32(state[4] as i32, 0, 0, 0);
        for block in blocks.chunks_exact(64) {
            let word = |i: usize| {
                let bytes: &[u8; 16] = block[16 * i..16 * i + 16].try_into().expect("16 bytes of a 64-byte block");
                // SAFETY: `bytes` is 16 readable bytes; the load has no alignment requirement.
                _mm_shuffle_epi8(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }, byte_swap)
            };
            // The message schedule in groups of four words, W[4i..4i+4] in `w[i % 4]`: the last four groups are
            // all that later groups need.
            let mut w = [word(0), word(1), word(2), word(3)];
            let (abcd_in, e_in) = (abcd, e);

            let mut e_plus_w = _mm_add_epi32(e, w[0]);
            // A..D four rounds back: E after four rounds is that A rotated, which `sha1nexte` computes.
            let mut abcd_back = abcd;
            abcd = _mm_sha1rnds4_epu32(abcd, e_plus_w, 0);
            // Groups 1..20 of four rounds, written out: `sha1rnds4` takes its round function as an immediate
            // (group / 5), and unrolled, the schedule indices are constants the compiler keeps in registers.
            macro_rules! group {
                ($group:literal, $function:literal) => {
                    if $group >= 4 {
                        let mixed = _mm_sha1msg1_epu32(w[$group % 4], w[($group + 1) % 4]);
                        w[$group % 4] =
                            _mm_sha1msg2_epu32(_mm_xor_si128(mixed, w[($group + 2) % 4]), w[($group + 3) % 4]);
                    }
                    e_plus_w = _mm_sha1nexte_epu32(abcd_back, w[$group % 4]);
                    abcd_back = abcd;
                    abcd = _mm_sha1rnds4_epu32(abcd, e_plus_w, $function);
                };
            }
            group!(1, 0);
            group!(2, 0);
            group!(3, 0);
            group!(4, 0);
            group!(5, 1);
            group!(6, 1);
            group!(7, 1);
            group!(8, 1);
            group!(9, 1);
            group!(10, 2);
            group!(11, 2);
            group!(12, 2);
            group!(13, 2);
            group!(14, 2);
            group!(15, 3);
            group!(16, 3);
            group!(17, 3);
            group!(18, 3);
            group!(19, 3);
            e = _mm_sha1nexte_epu32(abcd_back, e_in);
            abcd = _mm_add_epi32(abcd, abcd_in);
        }
        state[0] = _mm_extract_epi32(abcd, 3) as u32;
        state[1] = _mm_extract_epi32(abcd, 2) as u32;
        state[2] = _mm_extract_epi32(abcd, 1) as u32;
        state[3] = _mm_extract_epi32(abcd, 0) as u32;
        state[4] = _mm_extract_epi32(e, 3) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::bytes as noise;

    fn hex(d: [u8; 20]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        // FIPS 180 examples and the empty message.
        assert_eq!(hex(digest(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(digest(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(digest(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(hex(digest(&vec![b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn agrees_with_sha1_smol_at_every_tail_length() {
        // Every length up to three blocks covers each padding case (tail < 56, 56..64 spilling into a second
        // block, exact blocks), then piece-like sizes.
        for len in (0..=200).chain([16383, 16384, 16385, 262_144, 262_145]) {
            let data = noise(len, len as u64 + 7);
            assert_eq!(digest(&data), portable(&data), "length {len}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_sha_extension_path_itself_agrees_when_the_cpu_has_it() {
        if !cpu_has_sha_extensions() {
            eprintln!("this CPU has no SHA extensions: only the portable path runs here");
            return;
        }
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 65_536] {
            let data = noise(len, 99);
            // SAFETY: checked just above that the CPU has the instructions.
            assert_eq!(unsafe { shani::digest(&data) }, portable(&data), "length {len}");
        }
    }
}
