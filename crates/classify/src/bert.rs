//! A BERT encoder forward for one text at a time, written for all-MiniLM-L6-v2's shape (6
//! layers, width 384, 12 heads, absolute positions, erf GELU).
//!
//! The matrix products with the layer weights are this crate's int8 product (`int8.rs`) on
//! AVX-512 VNNI or AVX2, else candle's (F32 through its `gemm`, or its quantized kernels); everything
//! between them (embedding lookup, layer norm, attention, GELU, pooling) is plain Rust over
//! `Vec<f32>`, so that:
//! * one text needs no padding and no attention mask (the hot case: one prompt per request);
//! * Q, K and V are one matrix product (one thread-pool dispatch instead of three);
//! * GELU's erf and softmax's exp are polynomials the compiler vectorises, not a libm call per
//!   element.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Tensor};
use serde::Deserialize;

use crate::crew::CrewGuard;
use crate::int8::Epilogue;

type Result<T> = std::result::Result<T, String>;

fn err(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

/// How the encoder layers' weight matrices are stored and multiplied. Embeddings and layer
/// norms stay F32 in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As in `model.safetensors`: F32, candle's F32 matrix product.
    F32,
    /// Q8_0 (8-bit, one scale per 32 weights) on candle's AVX2 kernel, which quantizes the
    /// activations per 32 values too. Rows whose width is a multiple of 256 get one zero block
    /// appended, because candle sends those widths to its VNNI kernel instead.
    Q8_0,
    /// Q8_0 rows padded with zeros to a multiple of 256 so that candle's AVX-512 VNNI kernel
    /// takes every layer; it quantizes the activations per 256 values (coarser: more drift).
    Q8_0Vnni,
    /// Int8 with one scale per output column, the activations one scale per 128 values,
    /// multiplied by this crate's product on the calling thread (`int8.rs`: AVX-512 VNNI, or
    /// AVX2 without it; the same values either way).
    I8,
    /// As `I8` with the weights at ±63 instead of ±127 (`int8::Precision::Seven`), and the
    /// FFN's GELU outputs stored as 7-bit unsigned from each block's minimum
    /// (`int8::ActCode::Unsigned7`; the other activations as in `I8`): on AVX2 without AVX-512
    /// VNNI the product then needs no sign step, and the down-projection sums two byte products
    /// in 16 bits, for a somewhat larger drift from F32 (docs/routing-classes.md, "On the AVX2
    /// EPYC"). The same values on every CPU that runs it.
    I8W7,
}

impl Weights {
    /// `I8` where this crate's int8 product runs on AVX-512 VNNI, `I8W7` where it runs on AVX2
    /// only (there `I8`'s product takes about a third longer); else
    /// `Q8_0Vnni` where candle has its VNNI kernel (AVX-VNNI), else `F32`: without VNNI,
    /// candle's Q8_0 product is slower than its F32 one.
    pub fn for_this_cpu() -> Weights {
        match crate::int8::Kernel::for_this_cpu() {
            Some(crate::int8::Kernel::Vnni) => return Weights::I8,
            Some(crate::int8::Kernel::Avx2) => return Weights::I8W7,
            None => {}
        }
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2") {
                return Weights::Q8_0Vnni;
            }
        }
        Weights::F32
    }

    /// The format's name and the revision of its arithmetic, for stores of its embeddings
    /// (`switchyard_learn`'s cache): a format whose values changed gets a new tag, so its old
    /// embeddings are not taken for new ones. `i8-w7.2`: GELU outputs as 7-bit unsigned
    /// (2026-12-04).
    pub fn revision_tag(self) -> &'static str {
        match self {
            Weights::I8W7 => "i8-w7.2",
            other => other.name(),
        }
    }

    /// The name configs give it (`classes.semantic.weights`).
    fn name(self) -> &'static str {
        match self {
            Weights::F32 => "f32",
            Weights::Q8_0 => "q8_0",
            Weights::Q8_0Vnni => "q8_0-vnni",
            Weights::I8 => "i8",
            Weights::I8W7 => "i8-w7",
        }
    }
}

impl std::str::FromStr for Weights {
    type Err = String;
    fn from_str(s: &str) -> Result<Weights> {
        match s {
            "f32" => Ok(Weights::F32),
            "q8_0" => Ok(Weights::Q8_0),
            "q8_0-vnni" => Ok(Weights::Q8_0Vnni),
            // "i8-vnni": its name while only the AVX-512 VNNI product existed.
            "i8" | "i8-vnni" => Ok(Weights::I8),
            "i8-w7" => Ok(Weights::I8W7),
            other => Err(format!(
                "weights \"{other}\": expected f32, q8_0, q8_0-vnni, i8 or i8-w7"
            )),
        }
    }
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fields of `config.json` this forward depends on.
#[derive(Debug, Deserialize)]
pub(crate) struct BertConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f64,
    hidden_act: String,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

/// Candle's quantized kernels work in blocks of 256 values (the VNNI kernel's activation block).
const VNNI_BLOCK: usize = 256;
/// Q8_0's block: 32 weights sharing one scale.
const Q8_0_BLOCK: usize = 32;

enum Matrix {
    /// `k × n`: the transpose of the file's `n × k`, as a strided view.
    F32(Tensor),
    /// `n × k_stored`, the columns past `k` zero.
    Quantized { w: QTensor, k_stored: usize },
    /// `n × k`, this crate's int8 layout.
    Int8(Arc<crate::int8::PackedI8>),
}

/// What a layer's inputs are, for how `i8-w7` stores them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Either sign, large either way (norms' outputs, attention's).
    Signed,
    /// GELU's outputs, ≥ −0.17: `i8-w7` stores them as 7-bit unsigned from the block's
    /// minimum (`int8::ActCode::Unsigned7`), no coarser than 8-bit signed for such values.
    Gelu,
}

/// `y = x · Wᵀ + b` for `m` rows of `k` values.
struct Linear {
    matrix: Matrix,
    bias: Arc<[f32]>,
    k: usize,
}

impl Linear {
    /// `w` is `n × k` as the file stores it.
    fn new(w: &Tensor, bias: Vec<f32>, weights: Weights, input: Input) -> Result<Linear> {
        let (n, k) = w.dims2().map_err(|e| err("weight shape", e))?;
        if bias.len() != n {
            return Err(format!("bias of {} for a {n}-row weight", bias.len()));
        }
        let k_stored = match weights {
            Weights::F32 => {
                let t = w.t().map_err(|e| err("transposing", e))?;
                return Ok(Linear {
                    matrix: Matrix::F32(t),
                    bias: bias.into(),
                    k,
                });
            }
            Weights::I8 | Weights::I8W7 => {
                let values = w
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| err("weight values", e))?;
                use crate::int8::{ActCode, Precision};
                let (precision, code) = match (weights, input) {
                    (Weights::I8W7, Input::Gelu) => (Precision::Seven, ActCode::Unsigned7),
                    (Weights::I8W7, Input::Signed) => (Precision::Seven, ActCode::Offset8),
                    _ => (Precision::Eight, ActCode::Offset8),
                };
                let packed = crate::int8::PackedI8::new(&values, n, k, precision, code)?;
                return Ok(Linear {
                    matrix: Matrix::Int8(Arc::new(packed)),
                    bias: bias.into(),
                    k,
                });
            }
            Weights::Q8_0 if k.is_multiple_of(VNNI_BLOCK) => k + Q8_0_BLOCK,
            Weights::Q8_0 => k.next_multiple_of(Q8_0_BLOCK),
            Weights::Q8_0Vnni => k.next_multiple_of(VNNI_BLOCK),
        };
        let padded = if k_stored > k {
            w.pad_with_zeros(1, 0, k_stored - k)
                .map_err(|e| err("padding", e))?
        } else {
            w.clone()
        };
        let q = QTensor::quantize(&padded, GgmlDType::Q8_0).map_err(|e| err("quantizing", e))?;
        Ok(Linear {
            matrix: Matrix::Quantized { w: q, k_stored },
            bias: bias.into(),
            k,
        })
    }

    /// `x · Wᵀ`, without the bias: the callers add it in their pass over the rows. An owned
    /// `x` of the stored width is handed to candle as it is, without a copy. With a crew, an
    /// int8 product's tiles are shared with its helpers.
    fn forward(&self, x: Cow<'_, [f32]>, m: usize, crew: Option<&CrewGuard>) -> Result<Vec<f32>> {
        self.forward_then(x, m, Epilogue::default(), crew)
            .map(|(y, _)| y)
    }

    /// [`Linear::forward`] plus the bias (and GELU with `gelu`) where the int8 product applies
    /// them tile by tile; the flag says whether it did (else the caller does).
    fn forward_biased(
        &self,
        x: Cow<'_, [f32]>,
        m: usize,
        gelu: bool,
        crew: Option<&CrewGuard>,
    ) -> Result<(Vec<f32>, bool)> {
        let epilogue = Epilogue {
            bias: Some(self.bias.clone()),
            gelu,
        };
        self.forward_then(x, m, epilogue, crew)
    }

    fn forward_then(
        &self,
        x: Cow<'_, [f32]>,
        m: usize,
        epilogue: Epilogue,
        crew: Option<&CrewGuard>,
    ) -> Result<(Vec<f32>, bool)> {
        let applied = epilogue.bias.is_some();
        match &self.matrix {
            Matrix::F32(wt) => Tensor::from_slice(&x, (m, self.k), &Device::Cpu)
                .and_then(|x| x.matmul(wt))
                .and_then(|y| y.flatten_all())
                .and_then(|y| y.to_vec1::<f32>())
                .map(|y| (y, false))
                .map_err(|e| err("matmul", e)),
            Matrix::Int8(w) => {
                let acts = w.quantize(&x, m)?;
                let y = match crew {
                    Some(crew) => crew.product(w, acts, epilogue),
                    None => w.product(&acts, &epilogue),
                };
                Ok((y, applied))
            }
            Matrix::Quantized { w, k_stored } => {
                let input = if *k_stored == self.k {
                    x.into_owned()
                } else {
                    let mut padded = vec![0f32; m * k_stored];
                    for (dst, src) in padded
                        .chunks_exact_mut(*k_stored)
                        .zip(x.chunks_exact(self.k))
                    {
                        dst[..self.k].copy_from_slice(src);
                    }
                    padded
                };
                let layout = Layout::contiguous((m, *k_stored));
                match w.cpu_fwd(&CpuStorage::F32(input), &layout) {
                    Ok((CpuStorage::F32(v), _)) => Ok((v, false)),
                    Ok(_) => Err("quantized matmul returned a non-F32 result".into()),
                    Err(e) => Err(err("quantized matmul", e)),
                }
            }
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    /// Layer norm of one row in place (biased variance, as PyTorch).
    #[inline(always)]
    fn apply(&self, row: &mut [f32], eps: f32) {
        let width = row.len() as f32;
        let mean = sum_of(row) / width;
        for v in row.iter_mut() {
            *v -= mean;
        }
        let inv = 1.0 / (sum_of_squares(row) / width + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *v = *v * inv * g + b;
        }
    }
}

struct Layer {
    /// Rows: query, then key, then value.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// The loaded encoder. `Send + Sync`.
pub(crate) struct BertEncoder {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
    eps: f32,
    /// Share the int8 products with the helper threads when they are free ([`crate::crew`]).
    pub(crate) split: bool,
}

/// The named tensors of `model.safetensors`, taken out as they are used.
struct TensorFile(std::collections::HashMap<String, Tensor>);

impl TensorFile {
    fn take(&mut self, name: &str) -> Result<Tensor> {
        // sentence-transformers saves the bare `BertModel`; a `BertForX` checkpoint prefixes `bert.`.
        self.0
            .remove(name)
            .or_else(|| self.0.remove(&format!("bert.{name}")))
            .ok_or_else(|| format!("model.safetensors lacks {name}"))
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let v = self
            .take(name)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| err(name, e))?;
        if v.len() != len {
            return Err(format!("{name}: {} values, expected {len}", v.len()));
        }
        Ok(v)
    }

    fn norm(&mut self, prefix: &str, width: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.vector(&format!("{prefix}.weight"), width)?,
            beta: self.vector(&format!("{prefix}.bias"), width)?,
        })
    }

    fn linear(&mut self, prefix: &str, weights: Weights, input: Input) -> Result<Linear> {
        let w = self.take(&format!("{prefix}.weight"))?;
        let n = w.dims2().map_err(|e| err(prefix, e))?.0;
        let b = self.vector(&format!("{prefix}.bias"), n)?;
        Linear::new(&w, b, weights, input).map_err(|e| err(prefix, e))
    }
}

impl BertEncoder {
    pub(crate) fn load(
        config: &BertConfig,
        safetensors: &std::path::Path,
        weights: Weights,
    ) -> Result<BertEncoder> {
        if config.hidden_act != "gelu" {
            return Err(format!(
                "config.json: hidden_act \"{}\" (only \"gelu\", the erf form, is implemented)",
                config.hidden_act
            ));
        }
        if config.position_embedding_type != "absolute" {
            return Err(format!(
                "config.json: position_embedding_type \"{}\" (only \"absolute\" is implemented)",
                config.position_embedding_type
            ));
        }
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(format!(
                "config.json: hidden_size {hidden} is not a multiple of {heads} heads"
            ));
        }
        let tensors = candle_core::safetensors::load(safetensors, &Device::Cpu)
            .map_err(|e| err("loading model.safetensors", e))?;
        let mut file = TensorFile(tensors);
        let word = file
            .take("embeddings.word_embeddings.weight")?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| err("word embeddings", e))?;
        if word.is_empty() || !word.len().is_multiple_of(hidden) {
            return Err("word embeddings: not rows of hidden_size".into());
        }
        let position = file.vector(
            "embeddings.position_embeddings.weight",
            config.max_position_embeddings * hidden,
        )?;
        let token_type = file
            .take("embeddings.token_type_embeddings.weight")?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| err("token type embeddings", e))?;
        if token_type.is_empty() || !token_type.len().is_multiple_of(hidden) {
            return Err("token type embeddings: not rows of hidden_size".into());
        }
        let embed_norm = file.norm("embeddings.LayerNorm", hidden)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let parts = ["query", "key", "value"]
                .into_iter()
                .map(|name| {
                    let w = file.take(&format!("{p}.attention.self.{name}.weight"))?;
                    let b = file.vector(&format!("{p}.attention.self.{name}.bias"), hidden)?;
                    Ok((w, b))
                })
                .collect::<Result<Vec<_>>>()?;
            let w = Tensor::cat(&parts.iter().map(|(w, _)| w).collect::<Vec<_>>(), 0)
                .map_err(|e| err("stacking Q, K, V", e))?;
            let b: Vec<f32> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
            let qkv = Linear::new(&w, b, weights, Input::Signed).map_err(|e| err(&p, e))?;
            let up = file.linear(&format!("{p}.intermediate.dense"), weights, Input::Signed)?;
            if up.bias.len() != config.intermediate_size {
                return Err(format!("{p}: intermediate width {}", up.bias.len()));
            }
            layers.push(Layer {
                qkv,
                attn_out: file.linear(
                    &format!("{p}.attention.output.dense"),
                    weights,
                    Input::Signed,
                )?,
                attn_norm: file.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                up,
                down: file.linear(&format!("{p}.output.dense"), weights, Input::Gelu)?,
                out_norm: file.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        Ok(BertEncoder {
            word,
            position,
            token_type,
            embed_norm,
            layers,
            hidden,
            heads,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
            split: true,
        })
    }

    /// Whether the layers' products are this crate's int8 ones (`Weights::I8`).
    fn int8_products(&self) -> bool {
        matches!(
            self.layers.first().map(|l| &l.qkv.matrix),
            Some(Matrix::Int8(_))
        )
    }

    /// The mean over the tokens of the last layer's output (sentence-transformers' mean
    /// pooling; with one unpadded text every token counts), L2-normalised. With `share` false
    /// (a forward beside requests, on a low-priority thread) the forward never takes the helper,
    /// even when `split` is on, and is not counted as running: it yields the CPU to a shared one.
    /// It also offers the CPU back to the scheduler (`sched_yield`) before each attention and
    /// each feed-forward block: in the idle class a thread that got the CPU while a request
    /// thread sat preempted on the same run queue kept it for a whole slice (3.1 ms seen under
    /// `perf sched`; docs/routing-classes.md, "Classes that only label"), and a yield every
    /// block bounds that wait to one block.
    pub(crate) fn embed(&self, ids: &[u32], type_ids: &[u32], share: bool) -> Result<Vec<f32>> {
        let _counted = share.then(crate::crew::forward_started);
        // Only int8 products are shared: candle's run on its own pool, where a polling helper
        // would only take CPU from them.
        let crew = if share && self.split && self.int8_products() {
            crate::crew::join()
        } else {
            None
        };
        let crew = crew.as_ref();
        #[cfg(target_arch = "x86_64")]
        {
            let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if fma && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                // SAFETY: this CPU has the features `embed_avx512` is compiled for (checked above).
                #[allow(unsafe_code)]
                return unsafe { self.embed_avx512(ids, type_ids, crew, !share) };
            }
            if fma {
                // SAFETY: this CPU has the features `embed_avx2` is compiled for (checked above).
                #[allow(unsafe_code)]
                return unsafe { self.embed_avx2(ids, type_ids, crew, !share) };
            }
        }
        // aarch64 always has fused multiply-adds (NEON); other targets are not assumed to.
        if cfg!(target_arch = "aarch64") {
            self.embed_with::<true>(ids, type_ids, crew, !share)
        } else {
            self.embed_with::<false>(ids, type_ids, crew, !share)
        }
    }

    /// [`BertEncoder::embed`] compiled for AVX2 and FMA: a build for the baseline x86-64 (the
    /// default, as the gateway is built) otherwise runs the steps between the matrix products
    /// (layer norms, GELU, attention) 4 floats wide and without fused multiply-adds. Everything
    /// it calls here is inlined into it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn embed_avx2(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        crew: Option<&CrewGuard>,
        yield_cpu: bool,
    ) -> Result<Vec<f32>> {
        self.embed_with::<true>(ids, type_ids, crew, yield_cpu)
    }

    /// The same, 16 floats wide where the CPU has AVX-512 (where the int8 product runs).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
    fn embed_avx512(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        crew: Option<&CrewGuard>,
        yield_cpu: bool,
    ) -> Result<Vec<f32>> {
        self.embed_with::<true>(ids, type_ids, crew, yield_cpu)
    }

    #[inline(always)]
    fn embed_with<const FMA: bool>(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        crew: Option<&CrewGuard>,
        yield_cpu: bool,
    ) -> Result<Vec<f32>> {
        let len = ids.len();
        let h = self.hidden;
        if len == 0 || len > self.max_positions || type_ids.len() != len {
            return Err(format!(
                "{len} tokens (1 to {} allowed)",
                self.max_positions
            ));
        }
        let mut x = vec![0f32; len * h];
        for (pos, (row, (&id, &ty))) in x
            .chunks_exact_mut(h)
            .zip(ids.iter().zip(type_ids))
            .enumerate()
        {
            let word = table_row(&self.word, id, h).ok_or_else(|| format!("token id {id}"))?;
            let ty =
                table_row(&self.token_type, ty, h).ok_or_else(|| format!("token type {ty}"))?;
            let p = &self.position[pos * h..(pos + 1) * h];
            for (((v, w), t), p) in row.iter_mut().zip(word).zip(ty).zip(p) {
                *v = w + t + p;
            }
        }
        for row in x.chunks_exact_mut(h) {
            self.embed_norm.apply(row, self.eps);
        }
        for layer in &self.layers {
            if yield_cpu {
                std::thread::yield_now();
            }
            x = self.layer_forward::<FMA>(layer, &x, len, crew, yield_cpu)?;
        }
        let mut mean = vec![0f32; h];
        for row in x.chunks_exact(h) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        // The 1/len of the mean cancels in the normalisation.
        mean.iter_mut().for_each(|v| *v /= norm);
        Ok(mean)
    }

    /// With a crew, the int8 products (with the bias and GELU after them) and the attention
    /// heads are shared with its helper ([`crate::crew`], which never waits on work nobody has
    /// started); the norms, residuals and quantizing run on this thread, in plain loops (a
    /// closure would be compiled apart from `embed_avx2`, without its features). Spreading them
    /// over candle's pool was tried: no faster idle, and with a core busy elsewhere every extra
    /// barrier can wait on a descheduled thread.
    #[inline(always)]
    fn layer_forward<const FMA: bool>(
        &self,
        layer: &Layer,
        x: &[f32],
        len: usize,
        crew: Option<&CrewGuard>,
        yield_cpu: bool,
    ) -> Result<Vec<f32>> {
        let h = self.hidden;
        let (mut qkv, biased) = layer
            .qkv
            .forward_biased(Cow::Borrowed(x), len, false, crew)?;
        if !biased {
            for row in qkv.chunks_exact_mut(3 * h) {
                add(row, &layer.qkv.bias);
            }
        }
        let ctx = match crew {
            Some(crew) => {
                check_head_width(h, self.heads)?;
                crew.attention(qkv, len, h, self.heads)
            }
            None => attention(&qkv, len, h, self.heads)?,
        };
        let mut a = layer.attn_out.forward(Cow::Owned(ctx), len, crew)?;
        for (row, residual) in a.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
            add(row, &layer.attn_out.bias);
            add(row, residual);
            layer.attn_norm.apply(row, self.eps);
        }
        if yield_cpu {
            std::thread::yield_now();
        }
        let (mut up, activated) = layer
            .up
            .forward_biased(Cow::Borrowed(&a), len, true, crew)?;
        if !activated {
            let width = layer.up.bias.len();
            for row in up.chunks_exact_mut(width) {
                add(row, &layer.up.bias);
                for v in row.iter_mut() {
                    *v = gelu::<FMA>(*v);
                }
            }
        }
        let mut out = layer.down.forward(Cow::Owned(up), len, crew)?;
        for (row, residual) in out.chunks_exact_mut(h).zip(a.chunks_exact(h)) {
            add(row, &layer.down.bias);
            add(row, residual);
            layer.out_norm.apply(row, self.eps);
        }
        Ok(out)
    }
}

/// Row `i` of a table of rows of `width`, if there is one.
#[inline(always)]
fn table_row(table: &[f32], i: u32, width: usize) -> Option<&[f32]> {
    let start = i as usize * width;
    table.get(start..start + width)
}

#[inline(always)]
fn add(row: &mut [f32], other: &[f32]) {
    for (v, o) in row.iter_mut().zip(other) {
        *v += o;
    }
}

/// Key positions per block of scores: four AVX registers of f32.
const KEY_BLOCK: usize = 32;

/// Softmax(Q·Kᵀ/√d)·V per head over `len` rows of `[Q | K | V]`; no mask (one unpadded text).
#[inline(always)]
fn attention(qkv: &[f32], len: usize, hidden: usize, heads: usize) -> Result<Vec<f32>> {
    check_head_width(hidden, heads)?;
    let mut ctx = Vec::with_capacity(len * hidden);
    for head in 0..heads {
        // SAFETY: `ctx` has room for `len × hidden` values; the head width is checked.
        #[allow(unsafe_code)]
        unsafe {
            attention_head_of_width(qkv, len, hidden, heads, head, ctx.as_mut_ptr())
        };
    }
    // SAFETY: each head wrote its columns of every row: all values.
    #[allow(unsafe_code)]
    unsafe {
        ctx.set_len(len * hidden)
    };
    Ok(ctx)
}

/// Heads of width 32 or 64 are supported.
fn check_head_width(hidden: usize, heads: usize) -> Result<()> {
    match hidden / heads {
        32 | 64 => Ok(()),
        d => Err(format!("attention heads of width {d} (32 or 64 supported)")),
    }
}

/// One head's columns of the attention output, for a helper thread ([`crate::crew`]), compiled
/// as [`BertEncoder::embed`] compiles the forward's own attention on this CPU (so the same
/// values).
///
/// # Safety
/// As [`attention_head`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) unsafe fn attention_head_for_this_cpu(
    qkv: &[f32],
    len: usize,
    hidden: usize,
    heads: usize,
    head: usize,
    out: *mut f32,
) {
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        attention_head_avx512(qkv, len, hidden, heads, head, out)
    } else {
        attention_head_avx2(qkv, len, hidden, heads, head, out)
    }
}

/// # Safety
/// As [`attention_head`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn attention_head_avx2(
    qkv: &[f32],
    len: usize,
    hidden: usize,
    heads: usize,
    head: usize,
    out: *mut f32,
) {
    attention_head_of_width(qkv, len, hidden, heads, head, out)
}

/// # Safety
/// As [`attention_head`]; the CPU has AVX2, FMA, AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
#[allow(unsafe_code)]
unsafe fn attention_head_avx512(
    qkv: &[f32],
    len: usize,
    hidden: usize,
    heads: usize,
    head: usize,
    out: *mut f32,
) {
    attention_head_of_width(qkv, len, hidden, heads, head, out)
}

/// # Safety
/// As [`attention_head`]; a head width other than 32 or 64 writes nothing.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn attention_head_of_width(
    qkv: &[f32],
    len: usize,
    hidden: usize,
    heads: usize,
    head: usize,
    out: *mut f32,
) {
    // The head width is a constant inside the loops so their accumulators stay in registers.
    match hidden / heads {
        32 => attention_head::<32>(qkv, len, hidden, head, out),
        64 => attention_head::<64>(qkv, len, hidden, head, out),
        _ => {}
    }
}

/// Head `head`'s `D` columns of every output row, written through `out`.
///
/// # Safety
/// `out` is valid for `len × hidden` values, `qkv` holds `len` rows of `3 × hidden`, and
/// `(head + 1) × D ≤ hidden`; no other thread writes these columns meanwhile.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn attention_head<const D: usize>(
    qkv: &[f32],
    len: usize,
    hidden: usize,
    head: usize,
    out: *mut f32,
) {
    let scale = 1.0 / (D as f32).sqrt();
    let stride = 3 * hidden;
    let padded = len.next_multiple_of(KEY_BLOCK);
    // The keys transposed (D rows of `padded` positions, the padding zero), so a block of
    // scores accumulates in registers; the values as rows of D.
    let mut keys_t = vec![0f32; D * padded];
    let mut values = vec![[0f32; D]; len];
    for (j, row) in qkv.chunks_exact(stride).enumerate() {
        for (c, &k) in row[hidden + head * D..][..D].iter().enumerate() {
            keys_t[c * padded + j] = k;
        }
        values[j].copy_from_slice(&row[2 * hidden + head * D..][..D]);
    }
    let mut scores = vec![0f32; padded];
    for (i, row) in qkv.chunks_exact(stride).enumerate() {
        let mut q = [0f32; D];
        for (dst, src) in q.iter_mut().zip(&row[head * D..]) {
            *dst = src * scale;
        }
        for (jb, block) in scores.chunks_exact_mut(KEY_BLOCK).enumerate() {
            // Several registers of independent sums, so the additions do not wait on each other.
            let mut acc = [0f32; KEY_BLOCK];
            for (&qc, keys) in q.iter().zip(keys_t.chunks_exact(padded)) {
                let keys = &keys[jb * KEY_BLOCK..(jb + 1) * KEY_BLOCK];
                for (a, k) in acc.iter_mut().zip(keys) {
                    *a += qc * k;
                }
            }
            block.copy_from_slice(&acc);
        }
        let live = &mut scores[..len];
        let max = max_of(live);
        for s in live.iter_mut() {
            *s = exp(*s - max);
        }
        let inv_sum = 1.0 / sum_of(live);
        let mut acc = [0f32; D];
        for (&p, v) in live.iter().zip(&values) {
            for (a, v) in acc.iter_mut().zip(v) {
                *a += p * v;
            }
        }
        let o = std::slice::from_raw_parts_mut(out.add(i * hidden + head * D), D);
        for (o, a) in o.iter_mut().zip(&acc) {
            *o = a * inv_sum;
        }
    }
}

/// Sum in 8 independent lanes (a single running sum would not vectorise: float addition is
/// not associative, so the compiler keeps the order).
#[inline(always)]
fn sum_of(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ x², in 8 lanes as [`sum_of`].
#[inline(always)]
fn sum_of_squares(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Maximum in 8 independent lanes (see [`sum_of`]); inputs are never NaN here.
#[inline(always)]
fn max_of(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    acc.iter().fold(tail, |m, &x| if x > m { x } else { m })
}

/// GELU, erf form (BERT's `gelu`): x/2 · (1 + erf(x/√2)).
#[inline(always)]
pub(crate) fn gelu<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a rational function of x (odd degree 13 over even degree 8), clamped to ±4 where erf
/// is ±1 in f32: Eigen's `generic_fast_erf_float` (max error ≈ 1e-7 on [-4, 4]).
#[inline(always)]
fn erf<const FMA: bool>(x: f32) -> f32 {
    // Numerator (in x², then times x) and denominator coefficients, highest power first.
    const P: [f64; 7] = [
        -2.726_142_258_013_06e-10,
        2.770_681_424_959_02e-8,
        -2.101_024_020_825_08e-6,
        -5.692_506_394_623_46e-5,
        -7.349_906_303_268_55e-4,
        -2.954_599_808_540_25e-3,
        -1.609_603_332_624_15e-2,
    ];
    const Q: [f64; 5] = [
        -1.456_607_184_649_96e-5,
        -2.133_740_552_789_05e-4,
        -1.682_826_974_382_03e-3,
        -7.373_329_167_204_68e-3,
        -1.426_473_905_141_89e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = P.iter().fold(0f32, |acc, &c| fma::<FMA>(acc, x2, c as f32));
    let q = Q.iter().fold(0f32, |acc, &c| fma::<FMA>(acc, x2, c as f32));
    x * p / q
}

/// `a · b + c`: one fused instruction where the caller is compiled with FMA (`FMA` true:
/// `embed_avx2`, `embed_avx512`), a multiply and an add elsewhere (`mul_add` there would be a
/// software `fmaf` call per element).
#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// eˣ for x ≤ 0 (softmax after subtracting the maximum): 2ⁿ · e^r with |r| ≤ ln2/2 and a
/// degree-6 Taylor polynomial for e^r (relative error < 2e-7). Inputs below -87 give ≈ 1.6e-38.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to an integer held in the low mantissa bits: n without a
    // float-to-int conversion (Rust's saturating `as` keeps the loop from vectorising).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n is in [-126, 0], so n + 127 is a valid biased exponent.
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // erf at a few points (Abramowitz & Stegun table 7.1, to 7+ digits).
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.1, 0.112_462_92),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (1.5, 0.966_105_1),
            (2.0, 0.995_322_3),
            (3.0, 0.999_977_9),
            (5.0, 1.0),
        ] {
            assert!(
                (erf::<false>(x) - want).abs() < 1e-6,
                "erf({x}) = {}",
                erf::<false>(x)
            );
            assert!(
                (erf::<true>(x) - want).abs() < 1e-6,
                "fused erf({x}) = {}",
                erf::<true>(x)
            );
            assert!(
                (erf::<false>(-x) + want).abs() < 1e-6,
                "erf({}) = {}",
                -x,
                erf::<false>(-x)
            );
        }
    }

    /// Stores of embeddings key on the tag (16 bytes in `switchyard_learn`'s cache): one per
    /// format, each naming its format, each fitting.
    #[test]
    fn revision_tags_are_distinct_and_name_their_format() {
        let all = [
            Weights::F32,
            Weights::Q8_0,
            Weights::Q8_0Vnni,
            Weights::I8,
            Weights::I8W7,
        ];
        let tags: std::collections::HashSet<&str> = all.iter().map(|w| w.revision_tag()).collect();
        assert_eq!(tags.len(), all.len());
        for w in all {
            let tag = w.revision_tag();
            assert!(
                tag.starts_with(&w.to_string()) && tag.len() <= 16,
                "{w}: {tag}"
            );
        }
    }

    /// Every compiled copy of the forward this CPU can run (plain, AVX2+FMA, AVX-512) gives
    /// the same embedding up to float rounding: they differ only in vector width and fused
    /// multiply-adds, so a wrong copy (say, a loop the wider one gets wrong) shows here.
    /// The encoder from the model folder the tests use (`scripts/fetch-models.sh`).
    fn load_encoder(weights: Weights) -> BertEncoder {
        let dir = crate::default_model_dir();
        let config: BertConfig = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("model files missing from {}: {e}", dir.display()));
        BertEncoder::load(&config, &dir.join("model.safetensors"), weights)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_compiled_forward_gives_the_same_embedding() {
        let encoder = load_encoder(Weights::F32);
        // [CLS] a run of word pieces [SEP]: any valid ids make a valid forward. The copies read
        // 1.2e-7 apart at most here (12-03); 1e-5 leaves room for other CPUs' rounding.
        let ids: Vec<u32> = std::iter::once(101)
            .chain((0..30).map(|i| 2000 + 37 * i))
            .chain(std::iter::once(102))
            .collect();
        let types = vec![0; ids.len()];
        let plain = encoder
            .embed_with::<false>(&ids, &types, None, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut copies = vec![("dispatched", encoder.embed(&ids, &types, true))];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: the features were checked on the line above.
                #[allow(unsafe_code)]
                copies.push(("avx2", unsafe {
                    encoder.embed_avx2(&ids, &types, None, false)
                }));
            } else {
                eprintln!("this CPU lacks AVX2+FMA: that copy is not compared here");
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                // SAFETY: as above.
                #[allow(unsafe_code)]
                copies.push(("avx512", unsafe {
                    encoder.embed_avx512(&ids, &types, None, false)
                }));
            } else {
                eprintln!("this CPU lacks AVX-512: that copy is not compared here");
            }
        }
        for (name, got) in copies {
            let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), plain.len(), "{name}");
            let cosine: f32 = got.iter().zip(&plain).map(|(a, b)| a * b).sum();
            let max_diff = got
                .iter()
                .zip(&plain)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                cosine > 0.999_99 && max_diff < 1e-5,
                "{name}: cosine {cosine}, largest difference {max_diff}"
            );
        }
    }

    #[test]
    fn a_forward_shared_with_helpers_gives_the_embedding_of_one_alone() {
        assert!(
            crate::int8::available(),
            "this CPU lacks AVX2 and FMA: forwards are shared only where the int8 product runs"
        );
        let mut encoder = load_encoder(Weights::I8);
        let ids: Vec<u32> = std::iter::once(101)
            .chain((0..40).map(|i| 3000 + 53 * i))
            .chain(std::iter::once(102))
            .collect();
        let types = vec![0; ids.len()];
        encoder.split = false;
        let alone = encoder
            .embed(&ids, &types, true)
            .unwrap_or_else(|e| panic!("{e}"));
        encoder.split = true;
        // A forward told not to share never takes the helper, split or not.
        let helped = crate::crew::split_counts().helped_tiles;
        for _ in 0..20 {
            let unshared = encoder
                .embed(&ids, &types, false)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(unshared, alone);
        }
        assert_eq!(crate::crew::split_counts().helped_tiles, helped);
        // The helper sleeps between forwards, so the first ones may finish before it wakes.
        for _ in 0..100 {
            let shared = encoder
                .embed(&ids, &types, true)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(shared, alone);
            if crate::crew::split_counts().helped_tiles > helped {
                return;
            }
        }
        panic!("no tile of 100 forwards was computed by a helper");
    }

    /// candle's products are not shared, so a forward with them never holds the crew.
    #[test]
    fn only_int8_forwards_take_the_crew() {
        assert!(load_encoder(Weights::I8).int8_products());
        assert!(!load_encoder(Weights::F32).int8_products());
    }

    #[test]
    fn exp_matches_std_for_non_positive_inputs() {
        let mut x = -90.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 4e-7 + 2e-38,
                "exp({x}) = {got}, std {want}"
            );
            x += 0.013;
        }
    }
}
