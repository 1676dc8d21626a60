//! The learned router: L2-regularised logistic regression on MiniLM prompt embeddings, predicting
//! P(strong needed) = P(the weak model is wrong and the strong one right), fitted by Newton's
//! method (exact, deterministic, no learning rate to tune).
//!
//! Why this model: it is 385 numbers (a small JSON file), costs one dot product per request on
//! top of the embedding the classifier may already compute, and is calibrated enough that a
//! threshold maps to a predictable share of strong calls. k-NN over training embeddings ranked
//! held-out MMLU subjects no better in our trials and needs the whole training set at run time.

use serde::{Deserialize, Serialize};

/// Label a training row with: is the strong model needed for it?
pub fn strong_needed(weak: bool, strong: bool) -> bool {
    strong && !weak
}

/// Logistic-regression weights over an embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Logistic {
    pub fn predict(&self, x: &[f32]) -> f32 {
        let z: f32 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

/// Fits weights by Newton's method on the L2-penalised log loss (`l2` × |w|², bias unpenalised).
pub fn fit_logistic(
    xs: &[Vec<f32>],
    ys: &[bool],
    l2: f64,
    iterations: usize,
) -> Result<Logistic, String> {
    let n = xs.len();
    if n == 0 || n != ys.len() {
        return Err(format!("{n} rows for {} labels", ys.len()));
    }
    let d = xs[0].len();
    if xs.iter().any(|x| x.len() != d) {
        return Err("rows of different widths".into());
    }
    let dim = d + 1; // last coordinate: bias
    let mut w = vec![0f64; dim];
    // Rows in f64 with the bias coordinate appended, so the inner loops run over plain slices.
    let rows: Vec<Vec<f64>> = xs
        .iter()
        .map(|x| x.iter().map(|&v| f64::from(v)).chain([1.0]).collect())
        .collect();
    for _ in 0..iterations {
        let mut grad = vec![0f64; dim];
        let mut hess = vec![0f64; dim * dim];
        for (row, &y) in rows.iter().zip(ys) {
            let z: f64 = w.iter().zip(row).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let r = p - f64::from(u8::from(y));
            let s = (p * (1.0 - p)).max(1e-9);
            for a in 0..dim {
                let xa = row[a];
                grad[a] += r * xa;
                let sa = s * xa;
                // Upper triangle only; mirrored below.
                for (h, xb) in hess[a * dim + a..(a + 1) * dim].iter_mut().zip(&row[a..]) {
                    *h += sa * xb;
                }
            }
        }
        for a in 0..dim {
            for b in 0..a {
                hess[a * dim + b] = hess[b * dim + a];
            }
        }
        for j in 0..d {
            grad[j] += 2.0 * l2 * w[j];
            hess[j * dim + j] += 2.0 * l2;
        }
        hess[d * dim + d] += 1e-9;
        let step = solve_spd(&mut hess, &grad, dim)?;
        let mut change = 0f64;
        for j in 0..dim {
            w[j] -= step[j];
            change = change.max(step[j].abs());
        }
        if change < 1e-7 {
            break;
        }
    }
    Ok(Logistic {
        weights: w[..d].iter().map(|&v| v as f32).collect(),
        bias: w[d] as f32,
    })
}

/// Solves H x = g for a symmetric positive-definite H by Cholesky (H is overwritten).
fn solve_spd(h: &mut [f64], g: &[f64], n: usize) -> Result<Vec<f64>, String> {
    for j in 0..n {
        let mut diag = h[j * n + j];
        for k in 0..j {
            diag -= h[j * n + k] * h[j * n + k];
        }
        if diag <= 0.0 {
            return Err("the Hessian is not positive definite (raise l2)".into());
        }
        let diag = diag.sqrt();
        h[j * n + j] = diag;
        for i in j + 1..n {
            let mut v = h[i * n + j];
            for k in 0..j {
                v -= h[i * n + k] * h[j * n + k];
            }
            h[i * n + j] = v / diag;
        }
    }
    // L y = g, then Lᵀ x = y.
    let mut y = vec![0f64; n];
    for i in 0..n {
        let mut v = g[i];
        for k in 0..i {
            v -= h[i * n + k] * y[k];
        }
        y[i] = v / h[i * n + i];
    }
    let mut x = vec![0f64; n];
    for i in (0..n).rev() {
        let mut v = y[i];
        for k in i + 1..n {
            v -= h[k * n + i] * x[k];
        }
        x[i] = v / h[i * n + i];
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_a_linearly_separable_set() {
        let xs: Vec<Vec<f32>> = (0..40)
            .map(|i| vec![i as f32 / 40.0 - 0.5, ((i * 7) % 5) as f32 / 5.0])
            .collect();
        let ys: Vec<bool> = xs.iter().map(|x| x[0] > 0.0).collect();
        let m = fit_logistic(&xs, &ys, 1e-3, 30).unwrap();
        let right = xs
            .iter()
            .zip(&ys)
            .filter(|(x, &y)| (m.predict(x) >= 0.5) == y)
            .count();
        assert_eq!(right, 40);
        assert!(m.weights[0] > 0.0);
    }

    #[test]
    fn matches_the_base_rate_without_signal() {
        // Constant features: the fit is the log-odds of the base rate, 1/4.
        let xs = vec![vec![0.0f32]; 8];
        let ys = vec![true, false, false, false, true, false, false, false];
        let m = fit_logistic(&xs, &ys, 1.0, 30).unwrap();
        assert!(
            (m.predict(&[0.0]) - 0.25).abs() < 1e-4,
            "{}",
            m.predict(&[0.0])
        );
    }
}
