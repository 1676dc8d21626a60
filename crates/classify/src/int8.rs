//! An int8 matrix product for the encoder's layers on AVX-512 VNNI, or on AVX2 where the CPU has
//! no VNNI, on the calling thread (or shared by tiles, `crate::crew`).
//!
//! Weights are quantized once at load, symmetric per output column (one scale per row of the
//! file's `n × k` matrix); each product quantizes its activations in blocks of 128 values of a
//! row (one scale per block: one per token drifted further from the F32 forward, since a few of
//! BERT's hidden dimensions carry outliers). Each block's products sum in 32-bit integers and are
//! scaled once, instead of once per 32 (candle's Q8_0) — and no width needs padding to 256.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so an activation `q` (−127…127) is stored as
//! `q + 128`; the product then carries `128 · Σₖ w`, a constant per column removed at the end.
//! AVX2 has no `vpdpbusd`; its `vpmaddubsw` adds two byte products into 16 bits with saturation,
//! which `q + 128` against a weight could overflow, so it takes `|q|` against the weight with
//! `q`'s sign (each pair then within ±2·127²) and widens with `vpmaddwd`; with weights within
//! ±63 ([`Precision::Seven`]) the pairs of `q + 128` fit (±2·255·63) and that sign step goes.
//! Inputs that are never far below zero (GELU's outputs) may instead be stored as `u` = 0…127
//! from the block's minimum ([`ActCode::Unsigned7`]): then no offset is carried, the block's
//! minimum times `Σ w` is added, and on AVX2 two `vpmaddubsw` add in 16 bits before widening.
//! All sum exactly in 32 bits per block, so the kernels give the same outputs to the bit.
//!
//! Why not candle's quantized kernel: on MiniLM's shapes (≤ 32 rows, widths 384 and 1536) it
//! padded 384 to 512, spent a tenth of the forward quantizing activations in 256-value blocks,
//! and needed its thread pool, whose barriers wait on a descheduled thread when the other core
//! is busy (docs/routing-classes.md, "Classifier cost").

/// Output columns per tile: two 512-bit registers of 32-bit sums.
pub(crate) const TILE_N: usize = 32;
/// Activation rows per tile: 8 rows × 2 registers = 16 integer accumulators, half the register
/// file (the float sums of finished blocks spill, touched once per block).
const TILE_M: usize = 8;
/// Activation values sharing one scale.
const BLOCK: usize = 128;
/// A block of activations whose largest |x| (or, `Unsigned7`, whose spread) is at most this is
/// stored as all zeros with scale 0 (all at the minimum): 127 / 4e-37 overflows f32, and the
/// vector conversion of infinity (`i32::MIN`) differs from Rust's (`i32::MAX`).
const SPREAD_FLOOR: f32 = 1e-30;

/// A block's scale and its inverse for 127 steps over `spread` (its largest |x|, or with
/// `Unsigned7` its maximum minus its minimum); both 0 at or under [`SPREAD_FLOOR`]. Every
/// quantizer takes them from here, so all store the same bytes.
fn block_scale(spread: f32) -> (f32, f32) {
    if spread > SPREAD_FLOOR {
        (spread / 127.0, 127.0 / spread)
    } else {
        (0.0, 0.0)
    }
}

/// How many levels a quantized weight takes: `q` within ±[`Precision::max`], one scale per
/// output column. Activations are always within ±127.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precision {
    /// ±127: the full signed byte.
    Eight,
    /// ±63: half the resolution, so that on AVX2 `vpmaddubsw` can take the stored activation
    /// `q + 128` (≤ 255) as it is, each pair of products within ±2·255·63, with no `vpsignb`:
    /// about 1.35× the products per second of `Eight` there (docs/routing-classes.md). VNNI
    /// runs it at `Eight`'s speed, to the same values.
    Seven,
}

impl Precision {
    /// The largest |q| of a weight.
    pub(crate) fn max(self) -> f32 {
        match self {
            Precision::Eight => 127.0,
            Precision::Seven => 63.0,
        }
    }
}

/// How a product stores its activations as bytes, per block of 128 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActCode {
    /// `q + 128`, `q` within ±127 of the block's largest |x|.
    Offset8,
    /// `u` within 0…127 from the block's minimum to its maximum (`x ≈ min + u · scale`). For
    /// inputs bounded below near 0, as GELU's outputs are (≥ −0.17), as fine a step as
    /// `Offset8`'s; and with weights within ±63 four products stay within 4·127·63 = 32,004, so
    /// on AVX2 two `vpmaddubsw` add in 16 bits before one `vpmaddwd` widens them: a quarter
    /// fewer multiplier instructions (docs/routing-classes.md). Needs [`Precision::Seven`].
    Unsigned7,
}

/// `n × k` weights, quantized and laid out for [`PackedI8::matmul`].
pub(crate) struct PackedI8 {
    n: usize,
    k: usize,
    precision: Precision,
    code: ActCode,
    /// Tile-major: for each tile of 32 columns, for each group of 4 `k` positions, the 32
    /// columns' 4 bytes (one 64-byte register holds 16 columns' 4 products).
    data: Vec<i8>,
    /// Per column: the weight scale (max |w| / `precision.max()`).
    scales: Vec<f32>,
    /// Per block of `k` and column (block-major): 128 · Σ q over the block, the sum the
    /// activations' +128 offset adds.
    offsets: Vec<i32>,
    /// With [`ActCode::Unsigned7`], per block and column (block-major): Σ q over the block,
    /// which each block's minimum multiplies; else empty.
    col_sums: Vec<f32>,
}

/// The vector kernels: which one this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512 F, BW and VNNI (with AVX2 and FMA, which every such CPU has, for the GELU the
    /// tiles apply).
    Vnni,
    /// AVX2 and FMA: four instructions per 32 products where `Vnni` takes one per 64.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs, if any.
    pub(crate) fn for_this_cpu() -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Some(Kernel::Vnni);
            }
            if avx2 {
                return Some(Kernel::Avx2);
            }
        }
        None
    }
}

/// Whether this CPU runs a vector product ([`Kernel::for_this_cpu`]).
pub(crate) fn available() -> bool {
    Kernel::for_this_cpu().is_some()
}

impl PackedI8 {
    /// Quantizes `w` (`n × k`, row-major as the file stores it) to `precision`, for
    /// activations stored as `code`. `n` must be a multiple of 32 and `k` of 128.
    pub(crate) fn new(
        w: &[f32],
        n: usize,
        k: usize,
        precision: Precision,
        code: ActCode,
    ) -> Result<PackedI8, String> {
        if code == ActCode::Unsigned7 && precision != Precision::Seven {
            return Err("int8 weights: 7-bit unsigned activations need 7-bit weights".into());
        }
        if n == 0
            || !n.is_multiple_of(TILE_N)
            || k == 0
            || !k.is_multiple_of(BLOCK)
            || w.len() != n * k
        {
            return Err(format!(
                "int8 weights: {n} × {k} ({} values); rows must be a multiple of {TILE_N} and \
                 columns of {BLOCK}",
                w.len()
            ));
        }
        let mut data = vec![0i8; n * k];
        let mut scales = Vec::with_capacity(n);
        let mut offsets = vec![0i32; n * (k / BLOCK)];
        let level = precision.max();
        for (col, row) in w.chunks_exact(k).enumerate() {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (scale, inv) = if max > 0.0 {
                (max / level, level / max)
            } else {
                (0.0, 0.0)
            };
            let (tile, c) = (col / TILE_N, col % TILE_N);
            for (p, v) in row.iter().enumerate() {
                let q = (v * inv).round().clamp(-level, level) as i8;
                offsets[(p / BLOCK) * n + col] += 128 * i32::from(q);
                data[((tile * (k / 4) + p / 4) * TILE_N + c) * 4 + p % 4] = q;
            }
            scales.push(scale);
        }
        let col_sums = match code {
            ActCode::Offset8 => Vec::new(),
            // Exact: |Σ q| ≤ 128 · 63.
            ActCode::Unsigned7 => offsets.iter().map(|o| (o / 128) as f32).collect(),
        };
        Ok(PackedI8 {
            n,
            k,
            precision,
            code,
            data,
            scales,
            offsets,
            col_sums,
        })
    }

    /// `x · Wᵀ` for `m` rows of `k` values: `m × n` values. With the kernel this CPU runs
    /// ([`Kernel::for_this_cpu`]), else the same integer arithmetic in plain Rust (slow: the encoder
    /// only chooses int8 weights where the fast product runs, see `Weights::for_this_cpu`).
    #[cfg(test)]
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>, String> {
        let acts = self.quantize(x, m)?;
        Ok(self.product(&acts, &Epilogue::default()))
    }

    /// Column tiles of the product ([`PackedI8::tile`] computes one).
    pub(crate) fn tiles(&self) -> usize {
        self.n / TILE_N
    }

    /// Output columns.
    pub(crate) fn width(&self) -> usize {
        self.n
    }

    /// `x` (`m` rows of `k` values) quantized as the products take it.
    pub(crate) fn quantize(&self, x: &[f32], m: usize) -> Result<Acts, String> {
        if x.len() != m * self.k {
            return Err(format!(
                "int8 product: {} values for {m} rows of {}",
                x.len(),
                self.k
            ));
        }
        let mut acts = self.empty_acts(m);
        self.quantize_into(Kernel::for_this_cpu(), x, &mut acts);
        Ok(acts)
    }

    /// Room for `m` rows' quantized activations.
    fn empty_acts(&self, m: usize) -> Acts {
        let blocks = m * (self.k / BLOCK);
        Acts {
            bytes: vec![0u8; m * self.k],
            scales: vec![0f32; blocks],
            mins: match self.code {
                ActCode::Offset8 => Vec::new(),
                ActCode::Unsigned7 => vec![0f32; blocks],
            },
            m,
        }
    }

    /// `x` into `acts` (sized for it) with `kernel`'s instructions, or plain Rust without one.
    fn quantize_into(&self, kernel: Option<Kernel>, x: &[f32], acts: &mut Acts) {
        if self.code == ActCode::Unsigned7 {
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: as below; AVX-512 VNNI CPUs run AVX2 too, and one quantizer for both
                // kernels gives them the same bytes.
                #[allow(unsafe_code)]
                if kernel.is_some() {
                    return unsafe {
                        x86::quantize_unsigned7_avx2(
                            x,
                            &mut acts.bytes,
                            &mut acts.scales,
                            &mut acts.mins,
                        )
                    };
                }
            }
            quantize_unsigned7_portable(x, &mut acts.bytes, &mut acts.scales, &mut acts.mins);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `kernel` is one this CPU runs (callers have it from `for_this_cpu`); the
            // slices have the lengths the functions index within (checked by `quantize`).
            #[allow(unsafe_code)]
            match kernel {
                Some(Kernel::Vnni) => {
                    return unsafe { x86::quantize_rows(x, &mut acts.bytes, &mut acts.scales) }
                }
                Some(Kernel::Avx2) => {
                    return unsafe { x86::quantize_rows_avx2(x, &mut acts.bytes, &mut acts.scales) }
                }
                None => {}
            }
        }
        let _ = kernel;
        quantize_portable(x, &mut acts.bytes, &mut acts.scales);
    }

    /// `acts · Wᵀ` with `epilogue` applied, every tile on this thread.
    pub(crate) fn product(&self, acts: &Acts, epilogue: &Epilogue) -> Vec<f32> {
        self.product_with(Kernel::for_this_cpu(), acts, epilogue)
    }

    fn product_with(&self, kernel: Option<Kernel>, acts: &Acts, epilogue: &Epilogue) -> Vec<f32> {
        let len = acts.m * self.n;
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(kernel) = kernel {
                // Not zeroed first: the tiles write every value (zeroing cost 3% of a forward).
                let mut out = Vec::with_capacity(len);
                for tile in 0..self.tiles() {
                    // SAFETY: this CPU runs `kernel`; `out` has room for `m × n` values, `acts`
                    // came from `quantize` on this matrix.
                    #[allow(unsafe_code)]
                    unsafe {
                        x86::tile(kernel, self, acts, tile, out.as_mut_ptr(), epilogue)
                    };
                }
                // SAFETY: the tiles together wrote all `m × n` values.
                #[allow(unsafe_code)]
                unsafe {
                    out.set_len(len)
                };
                return out;
            }
        }
        let _ = kernel;
        let mut out = vec![0f32; len];
        self.matmul_portable(acts, &mut out);
        if let Some(bias) = &epilogue.bias {
            for row in out.chunks_exact_mut(self.n) {
                for (v, b) in row.iter_mut().zip(bias.iter()) {
                    *v += b;
                    if epilogue.gelu {
                        *v = crate::bert::gelu::<false>(*v);
                    }
                }
            }
        }
        out
    }

    /// Tile `tile`'s 32 columns of `acts · Wᵀ` (all `m` rows), `epilogue` applied, written into
    /// `out` (`m × n` values, row-major). Only those columns are touched, so threads may write
    /// different tiles of one output at once.
    ///
    /// # Safety
    /// [`available`] must be true, `out` valid for `acts.m × n` values, `acts` from
    /// [`PackedI8::quantize`] on this matrix, `tile < self.tiles()`, the bias (if any) `n` long.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    pub(crate) unsafe fn tile(&self, acts: &Acts, tile: usize, out: *mut f32, epilogue: &Epilogue) {
        if let Some(kernel) = Kernel::for_this_cpu() {
            x86::tile(kernel, self, acts, tile, out, epilogue)
        }
    }

    /// The product in plain Rust, operation for operation the vector one (so the same result
    /// to the bit): the tests hold the vector product to it.
    fn matmul_portable(&self, acts: &Acts, out: &mut [f32]) {
        let k = self.k;
        let blocks = k / BLOCK;
        for (r, (bytes, (out, a_scales))) in acts
            .bytes
            .chunks_exact(k)
            .zip(
                out.chunks_exact_mut(self.n)
                    .zip(acts.scales.chunks_exact(blocks)),
            )
            .enumerate()
        {
            for (col, y) in out.iter_mut().enumerate() {
                let (tile, c) = (col / TILE_N, col % TILE_N);
                let mut total = 0f32;
                for (b, &a_scale) in a_scales.iter().enumerate() {
                    let mut sum = 0i32;
                    for (p, &a) in bytes.iter().enumerate().skip(b * BLOCK).take(BLOCK) {
                        let q = self.data[((tile * (k / 4) + p / 4) * TILE_N + c) * 4 + p % 4];
                        sum += i32::from(a) * i32::from(q);
                    }
                    match self.code {
                        ActCode::Offset8 => {
                            let sum = (sum - self.offsets[b * self.n + col]) as f32;
                            total = sum.mul_add(a_scale, total);
                        }
                        ActCode::Unsigned7 => {
                            total = (sum as f32).mul_add(a_scale, total);
                            let min = acts.mins[r * blocks + b];
                            total = self.col_sums[b * self.n + col].mul_add(min, total);
                        }
                    }
                }
                *y = total * self.scales[col];
            }
        }
    }
}

/// Activations quantized for the products: `m` rows of bytes as the matrix's [`ActCode`]
/// says, a scale per block (and a minimum with `Unsigned7`).
pub(crate) struct Acts {
    bytes: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    m: usize,
}

impl Acts {
    pub(crate) fn rows(&self) -> usize {
        self.m
    }
}

/// What a tile does to its outputs once summed: add the layer's bias, then GELU. Applied by the
/// thread that computed the tile, so it is shared out with the products.
#[derive(Clone, Default)]
pub(crate) struct Epilogue {
    pub(crate) bias: Option<std::sync::Arc<[f32]>>,
    pub(crate) gelu: bool,
}

/// Blocks of 128 values as bytes `q + 128`, a scale each (the vector `quantize_rows`' arithmetic).
fn quantize_portable(x: &[f32], acts: &mut [u8], act_scales: &mut [f32]) {
    for ((values, bytes), scale) in x
        .chunks_exact(BLOCK)
        .zip(acts.chunks_exact_mut(BLOCK))
        .zip(act_scales.iter_mut())
    {
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv;
        (*scale, inv) = block_scale(max);
        for (b, v) in bytes.iter_mut().zip(values) {
            *b = ((v * inv).round_ties_even() as i32 + 128) as u8;
        }
    }
}

/// Blocks of 128 values as bytes `u` = (v − min) / scale, scale = (max − min) / 127 (the vector
/// `quantize_unsigned7_avx2`'s arithmetic).
fn quantize_unsigned7_portable(x: &[f32], acts: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    for (((values, bytes), scale), min_out) in x
        .chunks_exact(BLOCK)
        .zip(acts.chunks_exact_mut(BLOCK))
        .zip(scales.iter_mut())
        .zip(mins.iter_mut())
    {
        let min = values.iter().fold(f32::INFINITY, |m, v| m.min(*v));
        let max = values.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let inv;
        (*scale, inv) = block_scale(max - min);
        *min_out = min;
        for (b, v) in bytes.iter_mut().zip(values) {
            *b = (((v - min) * inv).round_ties_even() as i32).clamp(0, 127) as u8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // AVX-512 and AVX2 intrinsics: raw loads and stores within the checked slices.
mod x86 {
    use super::{
        block_scale, ActCode, Acts, Epilogue, Kernel, PackedI8, Precision, BLOCK, TILE_M, TILE_N,
    };
    use crate::bert::gelu;
    use std::arch::x86_64::*;

    /// Each block of 128 values of `x` as bytes `q + 128` with `q = round(v / scale)`,
    /// `scale = max |v| / 127` over the block, into `acts`; the scales into `scales`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_rows(x: &[f32], acts: &mut [u8], scales: &mut [f32]) {
        for ((values, out), scale) in x
            .chunks_exact(BLOCK)
            .zip(acts.chunks_exact_mut(BLOCK))
            .zip(scales.iter_mut())
        {
            let mut max = _mm512_setzero_ps();
            for p in (0..BLOCK).step_by(16) {
                max = _mm512_max_ps(max, _mm512_abs_ps(_mm512_loadu_ps(values.as_ptr().add(p))));
            }
            let max = _mm512_reduce_max_ps(max);
            let inv;
            (*scale, inv) = block_scale(max);
            let inv = _mm512_set1_ps(inv);
            let offset = _mm512_set1_epi32(128);
            for p in (0..BLOCK).step_by(16) {
                // Rounds to nearest even (MXCSR's default); |v · inv| ≤ 127, so q + 128 fits a byte.
                let q =
                    _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(values.as_ptr().add(p)), inv));
                let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, offset));
                _mm_storeu_si128(out.as_mut_ptr().add(p) as *mut __m128i, bytes);
            }
        }
    }

    /// One tile with `kernel`'s instructions.
    ///
    /// # Safety
    /// This CPU runs `kernel`; otherwise as [`PackedI8::tile`].
    pub(super) unsafe fn tile(
        kernel: Kernel,
        w: &PackedI8,
        acts: &Acts,
        tile: usize,
        out: *mut f32,
        epilogue: &Epilogue,
    ) {
        match kernel {
            Kernel::Vnni => tile_vnni(w, acts, tile, out, epilogue),
            Kernel::Avx2 => tile_avx2(w, acts, tile, out, epilogue),
        }
    }

    /// One tile of `acts · Wᵀ`: 32 columns, their weights (`k × 32` bytes, 12–48 KB here)
    /// reused from cache by every block of 8 rows; then the epilogue on those columns.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni(
        w: &PackedI8,
        acts: &Acts,
        tile: usize,
        out: *mut f32,
        epilogue: &Epilogue,
    ) {
        match w.code {
            ActCode::Offset8 => tile_vnni_as::<false>(w, acts, tile, out, epilogue),
            ActCode::Unsigned7 => tile_vnni_as::<true>(w, acts, tile, out, epilogue),
        }
    }

    /// [`tile_vnni`] for activations stored as `Unsigned7` (`U7`) or `Offset8`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni_as<const U7: bool>(
        w: &PackedI8,
        acts: &Acts,
        tile: usize,
        out: *mut f32,
        epilogue: &Epilogue,
    ) {
        let (k, m) = (w.k, acts.m);
        let weights = w.data.as_ptr().add(tile * k * TILE_N);
        let col = tile * TILE_N;
        let mut m0 = 0;
        while m0 < m {
            let rows = (m - m0).min(TILE_M);
            let a = acts.bytes.as_ptr().add(m0 * k);
            let o = out.add(m0 * w.n + col);
            let blocks = m0 * (k / BLOCK)..(m0 + rows) * (k / BLOCK);
            let s = &acts.scales[blocks.clone()];
            let mins = if U7 { &acts.mins[blocks] } else { &[][..] };
            match rows {
                8 => block::<8, U7>(w, weights, a, s, mins, col, o),
                7 => block::<7, U7>(w, weights, a, s, mins, col, o),
                6 => block::<6, U7>(w, weights, a, s, mins, col, o),
                5 => block::<5, U7>(w, weights, a, s, mins, col, o),
                4 => block::<4, U7>(w, weights, a, s, mins, col, o),
                3 => block::<3, U7>(w, weights, a, s, mins, col, o),
                2 => block::<2, U7>(w, weights, a, s, mins, col, o),
                _ => block::<1, U7>(w, weights, a, s, mins, col, o),
            }
            m0 += rows;
        }
        apply_epilogue(w, m, col, out, epilogue);
    }

    /// The bias and GELU on one tile's columns, compiled into each kernel's tile function.
    #[inline(always)]
    unsafe fn apply_epilogue(
        w: &PackedI8,
        m: usize,
        col: usize,
        out: *mut f32,
        epilogue: &Epilogue,
    ) {
        if let Some(bias) = &epilogue.bias {
            let bias = &bias[col..col + TILE_N];
            for r in 0..m {
                let row = std::slice::from_raw_parts_mut(out.add(r * w.n + col), TILE_N);
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
                if epilogue.gelu {
                    for v in row.iter_mut() {
                        *v = gelu::<true>(*v);
                    }
                }
            }
        }
    }

    /// `R` rows × 32 columns: per block of 128 values, 2·R integer accumulators, four products
    /// per byte lane per `vpdpbusd`, then one conversion and scaling per output and block. With
    /// `U7` the sums carry no offset, and the block's minimum times Σ w is added instead.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block<const R: usize, const U7: bool>(
        w: &PackedI8,
        weights: *const i8,
        acts: *const u8,
        act_scales: &[f32],
        act_mins: &[f32],
        col: usize,
        out: *mut f32,
    ) {
        let k = w.k;
        let blocks = k / BLOCK;
        let mut total = [[_mm512_setzero_ps(); 2]; R];
        for b in 0..blocks {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            for group in b * BLOCK / 4..(b + 1) * BLOCK / 4 {
                let w0 = _mm512_loadu_si512(weights.add(group * 4 * TILE_N) as *const _);
                let w1 = _mm512_loadu_si512(weights.add(group * 4 * TILE_N + 64) as *const _);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_epi32(
                        (acts.add(r * k + group * 4) as *const i32).read_unaligned(),
                    );
                    acc[0] = _mm512_dpbusd_epi32(acc[0], a, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], a, w1);
                }
            }
            for half in 0..2 {
                if U7 {
                    let col_sums =
                        _mm512_loadu_ps(w.col_sums.as_ptr().add(b * w.n + col + half * 16));
                    for (r, (acc, total)) in acc.iter().zip(total.iter_mut()).enumerate() {
                        let scale = _mm512_set1_ps(act_scales[r * blocks + b]);
                        let min = _mm512_set1_ps(act_mins[r * blocks + b]);
                        let sum = _mm512_cvtepi32_ps(acc[half]);
                        total[half] = _mm512_fmadd_ps(sum, scale, total[half]);
                        total[half] = _mm512_fmadd_ps(col_sums, min, total[half]);
                    }
                    continue;
                }
                let offset = _mm512_loadu_si512(
                    w.offsets.as_ptr().add(b * w.n + col + half * 16) as *const _
                );
                for (r, (acc, total)) in acc.iter().zip(total.iter_mut()).enumerate() {
                    let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[half], offset));
                    let scale = _mm512_set1_ps(act_scales[r * blocks + b]);
                    total[half] = _mm512_fmadd_ps(sum, scale, total[half]);
                }
            }
        }
        for half in 0..2 {
            let scale = _mm512_loadu_ps(w.scales.as_ptr().add(col + half * 16));
            for (r, total) in total.iter().enumerate() {
                _mm512_storeu_ps(
                    out.add(r * w.n + half * 16),
                    _mm512_mul_ps(total[half], scale),
                );
            }
        }
    }

    /// [`quantize_rows`] with AVX2: the same rounding (to nearest even), so the same bytes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_rows_avx2(x: &[f32], acts: &mut [u8], scales: &mut [f32]) {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        // `packs` and `packus` work within 128-bit lanes; this puts the 4-byte groups back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for ((values, out), scale) in x
            .chunks_exact(BLOCK)
            .zip(acts.chunks_exact_mut(BLOCK))
            .zip(scales.iter_mut())
        {
            let mut max = _mm256_setzero_ps();
            for p in (0..BLOCK).step_by(8) {
                let v = _mm256_loadu_ps(values.as_ptr().add(p));
                max = _mm256_max_ps(max, _mm256_and_ps(v, abs_mask));
            }
            let halves = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps(max, 1));
            let pairs = _mm_max_ps(halves, _mm_movehl_ps(halves, halves));
            let max = _mm_cvtss_f32(_mm_max_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
            let inv;
            (*scale, inv) = block_scale(max);
            let inv = _mm256_set1_ps(inv);
            let offset = _mm256_set1_epi32(128);
            let q = |p: usize| {
                let v = _mm256_mul_ps(_mm256_loadu_ps(values.as_ptr().add(p)), inv);
                _mm256_add_epi32(_mm256_cvtps_epi32(v), offset)
            };
            for p in (0..BLOCK).step_by(32) {
                // Values 1…255: the signed pack to 16 bits and the unsigned one to bytes keep them.
                let lo = _mm256_packs_epi32(q(p), q(p + 8));
                let hi = _mm256_packs_epi32(q(p + 16), q(p + 24));
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
                _mm256_storeu_si256(out.as_mut_ptr().add(p) as *mut __m256i, bytes);
            }
        }
    }

    /// Each block of 128 values of `x` as bytes `u = round((v − min) · 127 / (max − min))`
    /// (to nearest even, clamped to 0…127), with the block's scale `(max − min) / 127` and
    /// minimum: `quantize_unsigned7_portable`'s arithmetic, so the same bytes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_unsigned7_avx2(
        x: &[f32],
        acts: &mut [u8],
        scales: &mut [f32],
        mins: &mut [f32],
    ) {
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (((values, out), scale), min_out) in x
            .chunks_exact(BLOCK)
            .zip(acts.chunks_exact_mut(BLOCK))
            .zip(scales.iter_mut())
            .zip(mins.iter_mut())
        {
            let mut lo = _mm256_set1_ps(f32::INFINITY);
            let mut hi = _mm256_set1_ps(f32::NEG_INFINITY);
            for p in (0..BLOCK).step_by(8) {
                let v = _mm256_loadu_ps(values.as_ptr().add(p));
                lo = _mm256_min_ps(lo, v);
                hi = _mm256_max_ps(hi, v);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
            let min = lanes.iter().fold(f32::INFINITY, |m, v| m.min(*v));
            _mm256_storeu_ps(lanes.as_mut_ptr(), hi);
            let max = lanes.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let inv;
            (*scale, inv) = block_scale(max - min);
            *min_out = min;
            let (inv, min) = (_mm256_set1_ps(inv), _mm256_set1_ps(min));
            let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(127));
            let u = |p: usize| {
                let v = _mm256_mul_ps(
                    _mm256_sub_ps(_mm256_loadu_ps(values.as_ptr().add(p)), min),
                    inv,
                );
                _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), zero), top)
            };
            for p in (0..BLOCK).step_by(32) {
                let lo = _mm256_packs_epi32(u(p), u(p + 8));
                let hi = _mm256_packs_epi32(u(p + 16), u(p + 24));
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
                _mm256_storeu_si256(out.as_mut_ptr().add(p) as *mut __m256i, bytes);
            }
        }
    }

    /// Rows per block of the AVX2 kernel, and 8-column registers per pass over a tile (the
    /// tile's 32 columns in `4 / REGS_AVX2` passes): `ROWS × REGS` sums, the weights and the
    /// temporaries within AVX2's 16 registers. 2 × 4 took 7.8–8.5 ms per embedding alone here
    /// (`EMBED_SPLIT=0 EMBED_WORDS=30 target/release/examples/embed_timing i8`), 4 × 2 9.3–10.5,
    /// 2 × 2 9.5, 1 × 4 8.1–9.4: a row's flip and absolute value serve four registers.
    const TILE_M_AVX2: usize = 2;
    const REGS_AVX2: usize = 4;

    /// One tile with AVX2: its columns in passes of `8 · REGS_AVX2`, blocks of up to
    /// `TILE_M_AVX2` rows.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2(
        w: &PackedI8,
        acts: &Acts,
        tile: usize,
        out: *mut f32,
        epilogue: &Epilogue,
    ) {
        let (k, m) = (w.k, acts.m);
        let weights = w.data.as_ptr().add(tile * k * TILE_N);
        let col = tile * TILE_N;
        for pass in 0..TILE_N / (8 * REGS_AVX2) {
            let mut m0 = 0;
            while m0 < m {
                let rows = (m - m0).min(TILE_M_AVX2);
                let a = acts.bytes.as_ptr().add(m0 * k);
                let o = out.add(m0 * w.n + col);
                let blocks = m0 * (k / BLOCK)..(m0 + rows) * (k / BLOCK);
                let s = &acts.scales[blocks.clone()];
                let form = match (w.precision, w.code) {
                    (Precision::Eight, _) => SIGN,
                    (Precision::Seven, ActCode::Offset8) => OFFSET,
                    (Precision::Seven, ActCode::Unsigned7) => DOUBLE,
                };
                let mins = if form == DOUBLE {
                    &acts.mins[blocks]
                } else {
                    &[][..]
                };
                match (form, rows) {
                    (SIGN, 2) => {
                        block_avx2::<2, REGS_AVX2, SIGN>(w, weights, a, s, mins, col, pass, o)
                    }
                    (SIGN, _) => {
                        block_avx2::<1, REGS_AVX2, SIGN>(w, weights, a, s, mins, col, pass, o)
                    }
                    (OFFSET, 2) => {
                        block_avx2::<2, REGS_AVX2, OFFSET>(w, weights, a, s, mins, col, pass, o)
                    }
                    (OFFSET, _) => {
                        block_avx2::<1, REGS_AVX2, OFFSET>(w, weights, a, s, mins, col, pass, o)
                    }
                    (_, 2) => {
                        block_avx2::<2, REGS_AVX2, DOUBLE>(w, weights, a, s, mins, col, pass, o)
                    }
                    (_, _) => {
                        block_avx2::<1, REGS_AVX2, DOUBLE>(w, weights, a, s, mins, col, pass, o)
                    }
                }
                m0 += rows;
            }
        }
        apply_epilogue(w, m, col, out, epilogue);
    }

    /// The AVX2 kernel's forms. `SIGN` (8-bit weights): per 4 `k` positions and row, `q` is the
    /// stored byte with its top bit flipped (`q + 128` back to `q`); `vpmaddubsw` multiplies
    /// `|q|` by the weights carrying `q`'s sign (`vpsignb`, which also zeroes where `q` is 0)
    /// and adds pairs into 16 bits, `vpmaddwd` by ones adds those pairs into 32. `OFFSET`
    /// (weights within ±63): `vpmaddubsw` takes the stored `q + 128` as it is, and the sums
    /// lose the `128 · Σ w` it adds per block, as VNNI's do. `DOUBLE` (weights within ±63,
    /// activations `Unsigned7`): per 8 `k` positions two `vpmaddubsw` add in 16 bits (within
    /// ±4·127·63) before one `vpmaddwd`, and each block's minimum times Σ w is added to its sum.
    const SIGN: u8 = 0;
    const OFFSET: u8 = 1;
    const DOUBLE: u8 = 2;

    /// `R` rows × `8 · G` columns (pass `pass` over the tile) with AVX2, in form `FORM`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)] // one per operand the caller slices for this block
    unsafe fn block_avx2<const R: usize, const G: usize, const FORM: u8>(
        w: &PackedI8,
        weights: *const i8,
        acts: *const u8,
        act_scales: &[f32],
        act_mins: &[f32],
        col: usize,
        pass: usize,
        out: *mut f32,
    ) {
        let k = w.k;
        let blocks = k / BLOCK;
        let flip = _mm256_set1_epi8(i8::MIN);
        let ones = _mm256_set1_epi16(1);
        let first = pass * G * 8;
        let mut total = [[_mm256_setzero_ps(); G]; R];
        for b in 0..blocks {
            let mut acc = [[_mm256_setzero_si256(); G]; R];
            if FORM == DOUBLE {
                for group in (b * BLOCK / 4..(b + 1) * BLOCK / 4).step_by(2) {
                    let base = weights.add(group * 4 * TILE_N + first * 4);
                    let mut a0 = [_mm256_setzero_si256(); R];
                    let mut a1 = [_mm256_setzero_si256(); R];
                    for (r, (a0, a1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                        let at = acts.add(r * k + group * 4) as *const i32;
                        *a0 = _mm256_set1_epi32(at.read_unaligned());
                        *a1 = _mm256_set1_epi32(at.add(1).read_unaligned());
                    }
                    // Column register by column register, so only two weight registers live.
                    #[allow(clippy::needless_range_loop)] // `i` indexes each row's registers
                    for i in 0..G {
                        let w0 = _mm256_loadu_si256(base.add(32 * i) as *const __m256i);
                        let w1 =
                            _mm256_loadu_si256(base.add(4 * TILE_N + 32 * i) as *const __m256i);
                        for (row, (a0, a1)) in acc.iter_mut().zip(a0.iter().zip(&a1)) {
                            // Each `vpmaddubsw` within ±2·127·63, their sum within ±32,004.
                            let p = _mm256_add_epi16(
                                _mm256_maddubs_epi16(*a0, w0),
                                _mm256_maddubs_epi16(*a1, w1),
                            );
                            row[i] = _mm256_add_epi32(row[i], _mm256_madd_epi16(p, ones));
                        }
                    }
                }
                for (r, (acc, total)) in acc.iter().zip(total.iter_mut()).enumerate() {
                    let scale = _mm256_set1_ps(act_scales[r * blocks + b]);
                    let min = _mm256_set1_ps(act_mins[r * blocks + b]);
                    for (i, (acc, total)) in acc.iter().zip(total.iter_mut()).enumerate() {
                        let col_sums =
                            _mm256_loadu_ps(w.col_sums.as_ptr().add(b * w.n + col + first + i * 8));
                        *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*acc), scale, *total);
                        *total = _mm256_fmadd_ps(col_sums, min, *total);
                    }
                }
                continue;
            }
            for group in b * BLOCK / 4..(b + 1) * BLOCK / 4 {
                let base = weights.add(group * 4 * TILE_N + first * 4);
                let mut wr = [_mm256_setzero_si256(); G];
                for (i, wr) in wr.iter_mut().enumerate() {
                    *wr = _mm256_loadu_si256(base.add(32 * i) as *const __m256i);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let stored = _mm256_set1_epi32(
                        (acts.add(r * k + group * 4) as *const i32).read_unaligned(),
                    );
                    if FORM == OFFSET {
                        // `q + 128` (≤ 255) against weights within ±63: pairs within ±32,130.
                        for (acc, wr) in acc.iter_mut().zip(&wr) {
                            let p = _mm256_maddubs_epi16(stored, *wr);
                            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, ones));
                        }
                    } else {
                        let q = _mm256_xor_si256(stored, flip);
                        let magnitude = _mm256_abs_epi8(q);
                        for (acc, wr) in acc.iter_mut().zip(&wr) {
                            let p = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(*wr, q));
                            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, ones));
                        }
                    }
                }
            }
            if FORM == OFFSET {
                // The sums carry 128 · Σ w from the stored `q + 128`, as VNNI's do.
                for i in 0..G {
                    let offset = _mm256_loadu_si256(
                        w.offsets.as_ptr().add(b * w.n + col + first + i * 8) as *const __m256i,
                    );
                    for row in acc.iter_mut() {
                        row[i] = _mm256_sub_epi32(row[i], offset);
                    }
                }
            }
            for (r, (acc, total)) in acc.iter().zip(total.iter_mut()).enumerate() {
                let scale = _mm256_set1_ps(act_scales[r * blocks + b]);
                for (acc, total) in acc.iter().zip(total.iter_mut()) {
                    *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*acc), scale, *total);
                }
            }
        }
        for i in 0..G {
            let c = first + i * 8;
            let scale = _mm256_loadu_ps(w.scales.as_ptr().add(col + c));
            for (r, total) in total.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * w.n + c), _mm256_mul_ps(total[i], scale));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix in [-1, 1).
    pub(crate) fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..rows * cols)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn product_matches_f32_within_quantization_error() {
        let (n, k) = (64, 384);
        let w = matrix(n, k, 1);
        // Each factor rounded by up to half a step (1/254 of its row's maximum at `Eight`, 1/126
        // at `Seven`; an `Unsigned7` activation 1/127 of its block's range): over 384 terms with
        // random signs the error's deviation is about 0.04 (0.08), the sums' own about 6.5, so a
        // wrong layout, offset or minimum cannot pass. `Unsigned7` also takes inputs shifted
        // mostly positive, as GELU's outputs are.
        for (precision, code, tolerance, shift) in [
            (Precision::Eight, ActCode::Offset8, 0.25, 0.0),
            (Precision::Seven, ActCode::Offset8, 0.5, 0.0),
            (Precision::Seven, ActCode::Unsigned7, 0.5, 0.0),
            (Precision::Seven, ActCode::Unsigned7, 0.5, 0.8),
        ] {
            let packed = PackedI8::new(&w, n, k, precision, code).unwrap_or_else(|e| panic!("{e}"));
            for m in [1, 3, 8, 13] {
                let x: Vec<f32> = matrix(m, k, 2 + m as u64)
                    .iter()
                    .map(|v| v + shift)
                    .collect();
                let got = packed.matmul(&x, m).unwrap_or_else(|e| panic!("{e}"));
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
                        let g = got[i * n + j];
                        assert!(
                            (g - want).abs() < tolerance,
                            "{precision:?} {code:?} row {i} col {j}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Every vector kernel this CPU runs (AVX-512 VNNI runs AVX2 too).
    fn kernels_here() -> &'static [Kernel] {
        match Kernel::for_this_cpu() {
            Some(Kernel::Vnni) => &[Kernel::Vnni, Kernel::Avx2],
            Some(Kernel::Avx2) => &[Kernel::Avx2],
            None => &[],
        }
    }

    /// Every vector kernel this CPU runs against the plain one, in every form.
    #[test]
    fn vector_products_equal_the_portable_one_to_the_bit() {
        let kernels = kernels_here();
        if kernels.is_empty() {
            // Not skipped silently: without AVX2 only the portable product runs, which the test
            // above checks; the encoder never picks int8 weights there.
            eprintln!("this CPU has neither AVX2 nor AVX-512 VNNI: only the portable int8 product runs here");
            return;
        }
        let (n, k) = (96, 1536);
        let mut w = matrix(n, k, 7);
        // Columns at their extremes where the activations below are: the AVX2 kernels' 16-bit
        // sums come closest to saturating there (pairs of ±2·127² = 32,258 at `Eight`, ±2·255·63
        // = 32,130 at `Seven`; with `Unsigned7` the activations 3 are stored as 127 and −3 as 0,
        // so positions 0, 1, 4, 5 sum to ±4·127·63 = 32,004; of 32,767). Even columns positive
        // there, odd ones negative.
        for (col, row) in w.chunks_exact_mut(k).enumerate() {
            let sign = if col % 2 == 0 { 1.0 } else { -1.0 };
            for block in row.chunks_exact_mut(BLOCK) {
                block[..8].copy_from_slice(
                    &[1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0].map(|v| v * sign),
                );
            }
        }
        for (precision, code) in [
            (Precision::Eight, ActCode::Offset8),
            (Precision::Seven, ActCode::Offset8),
            (Precision::Seven, ActCode::Unsigned7),
        ] {
            let packed = PackedI8::new(&w, n, k, precision, code).unwrap_or_else(|e| panic!("{e}"));
            for m in 1..=17 {
                // Large values, and every block holding its extremes (±max after quantizing).
                let mut x: Vec<f32> = matrix(m, k, 100 + m as u64)
                    .iter()
                    .map(|v| v * 3.0)
                    .collect();
                for block in x.chunks_exact_mut(BLOCK) {
                    block[..8].copy_from_slice(&[3.0, 3.0, -3.0, -3.0, 3.0, 3.0, -3.0, -3.0]);
                }
                let mut slow = vec![0f32; m * n];
                let mut portable = packed.empty_acts(m);
                packed.quantize_into(None, &x, &mut portable);
                packed.matmul_portable(&portable, &mut slow);
                for &kernel in kernels {
                    let mut acts = packed.empty_acts(m);
                    packed.quantize_into(Some(kernel), &x, &mut acts);
                    let what = format!("{kernel:?} {precision:?} {code:?}, {m} rows");
                    assert_eq!(acts.bytes, portable.bytes, "{what}: quantized bytes");
                    assert_eq!(acts.scales, portable.scales, "{what}: scales");
                    assert_eq!(acts.mins, portable.mins, "{what}: minimums");
                    let fast = packed.product_with(Some(kernel), &acts, &Epilogue::default());
                    assert_eq!(fast, slow, "{what}");
                }
            }
        }
    }

    /// Blocks with a spread of (almost) nothing, constant or of denormal values: the vector
    /// kernels store and multiply them as the plain code does, and the outputs are finite and
    /// right (a constant block `c` gives `c · Σ w` with `Unsigned7`, a tiny one nothing).
    #[test]
    fn blocks_without_spread_quantize_alike_on_every_kernel() {
        let (n, k, m) = (32, 384, 2);
        let w = matrix(n, k, 9);
        let mut x = vec![0f32; m * k];
        for (i, block) in x.chunks_exact_mut(BLOCK).enumerate() {
            for (j, v) in block.iter_mut().enumerate() {
                // 127 / spread overflows f32 below about 3.7e-37.
                *v = match i % 3 {
                    0 => 0.7,
                    1 => (j as f32 - 60.0) * 1e-39,
                    _ => (j % 2) as f32 * 1e-38,
                };
            }
        }
        for (precision, code) in [
            (Precision::Eight, ActCode::Offset8),
            (Precision::Seven, ActCode::Unsigned7),
        ] {
            let packed = PackedI8::new(&w, n, k, precision, code).unwrap_or_else(|e| panic!("{e}"));
            let mut slow = vec![0f32; m * n];
            let mut portable = packed.empty_acts(m);
            packed.quantize_into(None, &x, &mut portable);
            packed.matmul_portable(&portable, &mut slow);
            for (i, y) in slow.iter().enumerate() {
                let (r, col) = (i / n, i % n);
                let want: f32 = (0..k).map(|p| x[r * k + p] * w[col * k + p]).sum();
                assert!(
                    y.is_finite() && (y - want).abs() < 0.1,
                    "{code:?} {i}: {y} vs {want}"
                );
            }
            for &kernel in kernels_here() {
                let mut acts = packed.empty_acts(m);
                packed.quantize_into(Some(kernel), &x, &mut acts);
                assert_eq!(acts.bytes, portable.bytes, "{kernel:?} {code:?}: bytes");
                let fast = packed.product_with(Some(kernel), &acts, &Epilogue::default());
                assert_eq!(fast, slow, "{kernel:?} {code:?}");
            }
        }
    }

    #[test]
    fn shapes_it_cannot_tile_are_refused() {
        let (eight, offset8) = (Precision::Eight, ActCode::Offset8);
        assert!(PackedI8::new(&[0.0; 16 * 128], 16, 128, eight, offset8).is_err());
        assert!(PackedI8::new(&[0.0; 32 * 64], 32, 64, eight, offset8).is_err());
        // 8-bit weights against `Unsigned7` activations could saturate AVX2's 16-bit sums.
        let refused = PackedI8::new(&[0.0; 32 * 128], 32, 128, eight, ActCode::Unsigned7);
        assert!(refused.is_err());
        for (precision, code) in [(eight, offset8), (Precision::Seven, ActCode::Unsigned7)] {
            let p = PackedI8::new(&[0.0; 32 * 128], 32, 128, precision, code)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(p.matmul(&[0.0; 127], 1).is_err());
            // All zeros (scales 0) multiply to zeros, not NaN.
            let y = p.matmul(&[0.0; 256], 2).unwrap_or_else(|e| panic!("{e}"));
            assert!(y.iter().all(|v| *v == 0.0), "{code:?}");
        }
    }
}
