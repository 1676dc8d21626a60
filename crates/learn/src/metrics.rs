//! Routing-quality metrics as RouteLLM defines them (Ong et al., "RouteLLM: Learning to Route
//! LLMs with Preference Data", ICLR 2025, section 5.1):
//!
//! - a router sends a request to the strong model when its score (predicted P(strong needed)) ≥ α;
//! - PGR(α) = (quality(α) − weak quality) / (strong quality − weak quality);
//! - APGR = area under PGR plotted against the share of strong calls, as α sweeps the scores
//!   from "none strong" to "all strong" (trapezoids between the achievable points; tied scores
//!   move together, so a tie is a straight segment, as a random pick among the tied would be);
//! - CPT(x) = the smallest share of strong calls at which PGR ≥ x.
//!
//! A random router's PGR grows linearly with the share, so its APGR ≈ 0.5 and CPT(80%) ≈ 80%.

use serde::{Deserialize, Serialize};

/// One achievable operating point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Route strong when score ≥ this (+∞ for the all-weak point).
    pub threshold: f64,
    pub strong_share: f64,
    pub quality: f64,
    pub pgr: f64,
}

/// A cost/quality point at a target share of strong calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostPoint {
    pub target_share: f64,
    /// The achieved share: the first curve point at or above the target.
    pub strong_share: f64,
    pub threshold: f64,
    pub quality: f64,
    pub pgr: f64,
    /// Mean cost per request relative to sending everything to the strong model.
    pub relative_cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub weak_quality: f64,
    pub strong_quality: f64,
    /// Best achievable: strong only where it is right and the weak model is wrong.
    pub oracle_quality: f64,
    pub oracle_strong_share: f64,
    pub apgr: f64,
    /// `None` when no point reaches the level.
    pub cpt50: Option<f64>,
    pub cpt80: Option<f64>,
    pub cost_points: Vec<CostPoint>,
    #[serde(skip)]
    pub curve: Vec<CurvePoint>,
}

/// Per-request cost of the weak model relative to the strong one, for [`CostPoint::relative_cost`].
/// Default 0.24 / 24.7: the blended $/1M-token prices RouteLLM used for Mixtral-8x7B and GPT-4.
pub const DEFAULT_WEAK_COST_RATIO: f64 = 0.24 / 24.7;

/// The whole PGR curve: from no strong calls to all, one point per distinct score.
/// `scores[i]` is the router's score for request `i`; `outcomes[i]` = (weak correct, strong correct).
pub fn curve(scores: &[f32], outcomes: &[(bool, bool)]) -> Result<Vec<CurvePoint>, String> {
    if scores.len() != outcomes.len() {
        return Err(format!(
            "{} scores for {} outcomes",
            scores.len(),
            outcomes.len()
        ));
    }
    if scores.is_empty() {
        return Err("no outcomes".into());
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(format!("score {i} is NaN"));
    }
    let n = scores.len() as f64;
    let weak_total = outcomes.iter().filter(|o| o.0).count() as f64;
    let strong_total = outcomes.iter().filter(|o| o.1).count() as f64;
    let gap = (strong_total - weak_total) / n;
    if gap <= 0.0 {
        return Err(
            "the strong model is not better than the weak one on this data: PGR is undefined"
                .into(),
        );
    }
    let weak_q = weak_total / n;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![CurvePoint {
        threshold: f64::INFINITY,
        strong_share: 0.0,
        quality: weak_q,
        pgr: 0.0,
    }];
    // Correct answers = weak-correct outside the strong set + strong-correct inside it.
    let mut correct = weak_total;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            let (w, st) = outcomes[order[i]];
            correct += f64::from(u8::from(st)) - f64::from(u8::from(w));
            i += 1;
        }
        let quality = correct / n;
        points.push(CurvePoint {
            threshold: f64::from(s),
            strong_share: i as f64 / n,
            quality,
            pgr: (quality - weak_q) / gap,
        });
    }
    Ok(points)
}

/// Trapezoid area under PGR over the strong share (0..1).
pub fn apgr(curve: &[CurvePoint]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].strong_share - w[0].strong_share) * (w[0].pgr + w[1].pgr) / 2.0)
        .sum()
}

/// Smallest strong share at which PGR ≥ `level` (0.5 for CPT(50%)).
pub fn cpt(curve: &[CurvePoint], level: f64) -> Option<f64> {
    curve
        .iter()
        .filter(|p| p.pgr >= level - 1e-12)
        .map(|p| p.strong_share)
        .min_by(f64::total_cmp)
}

/// All metrics, with cost/quality points at 0%, 10%, ..., 100% strong calls.
pub fn evaluate_scores(
    scores: &[f32],
    outcomes: &[(bool, bool)],
    weak_cost_ratio: f64,
) -> Result<Metrics, String> {
    let curve = curve(scores, outcomes)?;
    let n = outcomes.len() as f64;
    let weak_quality = outcomes.iter().filter(|o| o.0).count() as f64 / n;
    let strong_quality = outcomes.iter().filter(|o| o.1).count() as f64 / n;
    let needed = outcomes.iter().filter(|o| o.1 && !o.0).count() as f64 / n;
    let cost_points = (0..=10)
        .map(|k| {
            let target = f64::from(k) / 10.0;
            let p = curve
                .iter()
                .find(|p| p.strong_share >= target - 1e-12)
                .or(curve.last())
                .copied()
                .unwrap_or(CurvePoint {
                    threshold: f64::INFINITY,
                    strong_share: 0.0,
                    quality: weak_quality,
                    pgr: 0.0,
                });
            CostPoint {
                target_share: target,
                strong_share: p.strong_share,
                threshold: p.threshold,
                quality: p.quality,
                pgr: p.pgr,
                relative_cost: p.strong_share + (1.0 - p.strong_share) * weak_cost_ratio,
            }
        })
        .collect();
    Ok(Metrics {
        n: outcomes.len(),
        weak_quality,
        strong_quality,
        oracle_quality: weak_quality + needed,
        oracle_strong_share: needed,
        apgr: apgr(&curve),
        cpt50: cpt(&curve, 0.5),
        cpt80: cpt(&curve, 0.8),
        cost_points,
        curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Four requests: 0 needs strong (weak wrong, strong right), 1 and 2 are right on both,
    // 3 is wrong on both. weak 2/4, strong 3/4, gap 1/4.
    fn table() -> Vec<(bool, bool)> {
        vec![(false, true), (true, true), (true, true), (false, false)]
    }

    #[test]
    fn perfect_router_recovers_all_at_a_quarter() {
        let m = evaluate_scores(&[0.9, 0.1, 0.2, 0.3], &table(), 0.0).unwrap();
        // Curve: (0,0) (0.25,1) (0.5,1) (0.75,1) (1,1): area = 0.25*0.5 + 0.75 = 0.875.
        assert!((m.apgr - 0.875).abs() < 1e-12, "{}", m.apgr);
        assert_eq!(m.cpt50, Some(0.25));
        assert_eq!(m.cpt80, Some(0.25));
        assert_eq!(m.oracle_strong_share, 0.25);
        assert!((m.oracle_quality - 0.75).abs() < 1e-12);
    }

    #[test]
    fn worst_router_sends_the_needy_request_last() {
        let m = evaluate_scores(&[0.0, 0.9, 0.8, 0.7], &table(), 0.0).unwrap();
        // PGR stays 0 until the last request: area = 0.25 * 1 / 2.
        assert!((m.apgr - 0.125).abs() < 1e-12, "{}", m.apgr);
        assert_eq!(m.cpt50, Some(1.0));
    }

    #[test]
    fn all_tied_is_the_random_diagonal() {
        let m = evaluate_scores(&[0.5; 4], &table(), 0.0).unwrap();
        assert_eq!(m.curve.len(), 2);
        assert!((m.apgr - 0.5).abs() < 1e-12);
        assert_eq!(m.cpt80, Some(1.0));
    }

    #[test]
    fn a_request_where_strong_is_worse_lowers_pgr() {
        // weak 2/4, strong 3/4; request 3 is right on weak only, so routing it strong hurts.
        let t = vec![(false, true), (false, true), (true, true), (true, false)];
        let m = evaluate_scores(&[0.1, 0.8, 0.7, 0.9], &t, 0.0).unwrap();
        // Order 3,1,2,0: correct 2 → 1 → 2 → 2 → 3; PGR 0, -1, 0, 0, 1.
        let pgrs: Vec<f64> = m.curve.iter().map(|p| p.pgr).collect();
        assert_eq!(pgrs, vec![0.0, -1.0, 0.0, 0.0, 1.0]);
        // Area: 0.25*(-0.5) + 0.25*(-0.5) + 0 + 0.25*0.5 = -0.125.
        assert!((m.apgr + 0.125).abs() < 1e-12, "{}", m.apgr);
        assert_eq!(m.cpt50, Some(1.0));
    }

    #[test]
    fn cost_points_use_the_first_point_at_or_above_the_share() {
        let m = evaluate_scores(&[0.9, 0.1, 0.2, 0.3], &table(), 0.1).unwrap();
        let p = m
            .cost_points
            .iter()
            .find(|p| p.target_share == 0.2)
            .unwrap();
        assert_eq!(p.strong_share, 0.25);
        assert!((p.relative_cost - (0.25 + 0.75 * 0.1)).abs() < 1e-12);
        assert_eq!(m.cost_points.len(), 11);
    }

    #[test]
    fn no_gap_is_an_error() {
        assert!(evaluate_scores(&[0.1, 0.2], &[(true, true), (false, false)], 0.0).is_err());
        assert!(evaluate_scores(&[0.1], &[(true, true), (false, false)], 0.0).is_err());
    }
}
