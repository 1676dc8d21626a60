//! How many byte products per second AVX2 can do in each form the int8 kernels could take,
//! with everything in registers (no loads; 8 independent sums, as in a 2-row × 4-register block):
//! `cargo run --release -p switchyard-classify --example avx2_products`.
//!
//! - `i8`: `vpsignb`, `vpmaddubsw`, `vpmaddwd`, `vpaddd` per 32 products (`int8.rs`, `Eight`);
//! - `i8-w7`: `vpmaddubsw`, `vpmaddwd`, `vpaddd` per 32 (`Seven`: no sign step);
//! - two `vpmaddubsw` added in 16 bits before one `vpmaddwd` (needs 7-bit activations or 6-bit
//!   weights; not used);
//! - F32 fused multiply-adds, for scale.
//!
//! The inputs are arbitrary: only the instruction mix is timed.
#![allow(unsafe_code)] // AVX2 intrinsics, run only after the CPU is checked for AVX2 and FMA.

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            for _ in 0..3 {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { x86::run() };
            }
            return;
        }
    }
    eprintln!("this CPU lacks AVX2 and FMA: nothing to time");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Products per form and run.
    const PRODUCTS: usize = 200_000_000;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run() {
        let w = [
            _mm256_set1_epi8(3),
            _mm256_set1_epi8(-5),
            _mm256_set1_epi8(7),
            _mm256_set1_epi8(-9),
        ];
        let a = _mm256_set1_epi32(0x0102_0304);
        let time = |name: &str, f: &dyn Fn() -> i32| {
            let start = Instant::now();
            let sum = f();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{name:<40} {:>6.1} billion products/s  (checksum {sum})",
                PRODUCTS as f64 / secs / 1e9
            );
        };
        time("i8: sign, maddubs, maddwd, add", &|| unsafe {
            with_sign(&w, a)
        });
        time("i8-w7: maddubs, maddwd, add", &|| unsafe { offset(&w, a) });
        time("two maddubs summed in 16 bits", &|| unsafe {
            double(&w, a)
        });
        time("f32 fused multiply-add", &|| unsafe { fma() });
    }

    /// Sums the 8 accumulators' first lanes, so no loop is optimised away.
    #[target_feature(enable = "avx2")]
    unsafe fn fold(acc: &[__m256i; 8]) -> i32 {
        let mut s = acc[0];
        for x in &acc[1..] {
            s = _mm256_add_epi32(s, *x);
        }
        _mm256_cvtsi256_si32(s)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn with_sign(w: &[__m256i; 4], a: __m256i) -> i32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 8];
        let (mut q0, mut q1) = (a, _mm256_add_epi8(a, ones));
        for _ in 0..PRODUCTS / 256 {
            let (m0, m1) = (_mm256_abs_epi8(q0), _mm256_abs_epi8(q1));
            for i in 0..4 {
                let p = _mm256_maddubs_epi16(m0, _mm256_sign_epi8(w[i], q0));
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(p, ones));
                let p = _mm256_maddubs_epi16(m1, _mm256_sign_epi8(w[i], q1));
                acc[4 + i] = _mm256_add_epi32(acc[4 + i], _mm256_madd_epi16(p, ones));
            }
            // A dependency from the sums back to the inputs, as the next group's bytes are.
            q0 = _mm256_xor_si256(q0, acc[0]);
            q1 = _mm256_xor_si256(q1, acc[5]);
        }
        fold(&acc)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn offset(w: &[__m256i; 4], a: __m256i) -> i32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 8];
        let (mut q0, mut q1) = (a, _mm256_add_epi8(a, ones));
        for _ in 0..PRODUCTS / 256 {
            for i in 0..4 {
                let p = _mm256_maddubs_epi16(q0, w[i]);
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(p, ones));
                let p = _mm256_maddubs_epi16(q1, w[i]);
                acc[4 + i] = _mm256_add_epi32(acc[4 + i], _mm256_madd_epi16(p, ones));
            }
            q0 = _mm256_xor_si256(q0, acc[0]);
            q1 = _mm256_xor_si256(q1, acc[5]);
        }
        fold(&acc)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn double(w: &[__m256i; 4], a: __m256i) -> i32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 8];
        let mut q = [
            a,
            _mm256_add_epi8(a, ones),
            _mm256_add_epi8(a, w[1]),
            _mm256_add_epi8(a, w[2]),
        ];
        for _ in 0..PRODUCTS / 512 {
            for i in 0..4 {
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(q[0], w[i]),
                    _mm256_maddubs_epi16(q[2], w[i]),
                );
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(p, ones));
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(q[1], w[i]),
                    _mm256_maddubs_epi16(q[3], w[i]),
                );
                acc[4 + i] = _mm256_add_epi32(acc[4 + i], _mm256_madd_epi16(p, ones));
            }
            for (j, q) in q.iter_mut().enumerate() {
                *q = _mm256_xor_si256(*q, acc[2 * j]);
            }
        }
        fold(&acc)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma() -> i32 {
        let w = [
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(0.25),
            _mm256_set1_ps(-0.5),
            _mm256_set1_ps(1.0),
        ];
        let mut acc = [_mm256_setzero_ps(); 8];
        let (x0, x1) = (_mm256_set1_ps(1.0), _mm256_set1_ps(1.5));
        for _ in 0..PRODUCTS / 64 {
            for i in 0..4 {
                acc[i] = _mm256_fmadd_ps(w[i], x0, acc[i]);
                acc[4 + i] = _mm256_fmadd_ps(w[i], x1, acc[4 + i]);
            }
        }
        let mut s = acc[0];
        for x in &acc[1..] {
            s = _mm256_add_ps(s, *x);
        }
        _mm256_cvtss_f32(s) as i32
    }
}
