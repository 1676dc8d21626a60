//! Which targets a request should try, in which order: the "pick a target" phase.
//!
//! A [`Choice`] is a list of candidate targets with a policy: `ordered` (config order),
//! `cheapest` meeting a quality floor, `fastest` by live time to first token, or `weighted`
//! (random by weight). With a balancer the candidates are equivalent replicas of one model and
//! the balancer picks each next one (power of two choices over Peak-EWMA, prefix affinity...).

use std::sync::Arc;

use serde::Deserialize;
use switchyard_balance::Balance;

use crate::Target;

/// How the candidates are ordered for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoicePolicy {
    /// As configured: the first is preferred, the rest are fallbacks.
    #[default]
    Ordered,
    /// Cheapest blended price first, among candidates meeting the quality floor; unpriced last.
    Cheapest,
    /// Lowest live time-to-first-token estimate first; untried ones before measured ones.
    Fastest,
    /// One drawn at random in proportion to its weight, then the rest in order.
    Weighted,
    /// A learned router predicts whether the request needs the strong model: if so the
    /// highest-quality candidates come first, else the cheapest.
    Learned,
}

/// Predicts, per request, whether the strong model is needed (the `learned` policy). CPU work:
/// callers run it off the async workers.
pub trait StrongPredictor: Send + Sync + std::fmt::Debug {
    /// `Ok(true)`: send it to the strong model.
    fn wants_strong(&self, prompt: &str) -> Result<bool, String>;
}

#[derive(Debug)]
pub struct Candidate {
    pub target: Arc<Target>,
    /// The class's quality score for this target (e.g. accuracy on an eval), for the floor.
    pub quality: Option<f64>,
    pub weight: f64,
}

#[derive(Debug)]
pub struct Choice {
    pub policy: ChoicePolicy,
    pub candidates: Vec<Candidate>,
    /// Candidates scoring below this are never tried for this choice.
    pub quality_floor: Option<f64>,
    /// When set, the candidates are equivalent replicas and the balancer picks among them.
    pub balancer: Option<Arc<Balance>>,
    /// The `learned` policy's predictor.
    pub learned: Option<Arc<dyn StrongPredictor>>,
}

impl Choice {
    /// Stable: equal prices keep config order; unpriced candidates go last.
    fn sort_cheapest_first(&self, idx: &mut [usize]) {
        let price = |i: usize| {
            self.candidates[i]
                .target
                .blended_price()
                .unwrap_or(f64::INFINITY)
        };
        idx.sort_by(|&a, &b| price(a).total_cmp(&price(b)));
    }

    /// Indices of the candidates to try, in order. `draw` in [0, 1) drives `weighted`.
    pub fn order(&self, draw: f64) -> Vec<usize> {
        self.order_with(draw, None)
    }

    /// As [`Choice::order`], with the learned policy's decision (`None`: config order).
    pub fn order_with(&self, draw: f64, strong: Option<bool>) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.candidates.len())
            .filter(
                |&i| match (self.quality_floor, self.candidates[i].quality) {
                    (Some(floor), Some(q)) => q >= floor,
                    (Some(_), None) => false,
                    (None, _) => true,
                },
            )
            .collect();
        match self.policy {
            ChoicePolicy::Ordered => {}
            ChoicePolicy::Learned => match strong {
                Some(true) => idx.sort_by(|&a, &b| {
                    let qa = self.candidates[a].quality.unwrap_or(f64::NEG_INFINITY);
                    let qb = self.candidates[b].quality.unwrap_or(f64::NEG_INFINITY);
                    qb.total_cmp(&qa)
                }),
                Some(false) => self.sort_cheapest_first(&mut idx),
                None => {}
            },
            ChoicePolicy::Cheapest => {
                self.sort_cheapest_first(&mut idx);
            }
            ChoicePolicy::Fastest => {
                idx.sort_by_key(|&i| {
                    self.candidates[i]
                        .target
                        .ttft_estimate()
                        .unwrap_or_default()
                });
            }
            ChoicePolicy::Weighted => {
                let total: f64 = idx
                    .iter()
                    .map(|&i| self.candidates[i].weight.max(0.0))
                    .sum();
                if total > 0.0 {
                    let mut x = draw.clamp(0.0, 1.0) * total;
                    let mut pick = 0;
                    for (pos, &i) in idx.iter().enumerate() {
                        x -= self.candidates[i].weight.max(0.0);
                        if x < 0.0 {
                            pick = pos;
                            break;
                        }
                    }
                    let first = idx.remove(pick);
                    idx.insert(0, first);
                }
            }
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{BreakerConfig, CircuitBreaker, RetryPolicy, TargetTimeouts};

    struct Nop;
    impl switchyard_providers::Provider for Nop {
        fn name(&self) -> &str {
            "nop"
        }
        fn kind(&self) -> &'static str {
            "openai"
        }
        fn chat(
            &self,
            _call: switchyard_providers::ChatCall,
        ) -> switchyard_providers::BoxFuture<
            '_,
            Result<switchyard_providers::ChatOutput, switchyard_providers::ProviderError>,
        > {
            Box::pin(async { Err(switchyard_providers::ProviderError::unsupported("nop")) })
        }
    }

    fn cand(id: &str, price: Option<(f64, f64)>, quality: Option<f64>, weight: f64) -> Candidate {
        Candidate {
            target: Arc::new(Target::new(
                id.into(),
                Arc::new(Nop),
                id.into(),
                TargetTimeouts::default(),
                RetryPolicy::default(),
                CircuitBreaker::new(BreakerConfig::default()),
                false,
                price,
            )),
            quality,
            weight,
        }
    }

    fn ids(c: &Choice, order: Vec<usize>) -> Vec<String> {
        order
            .into_iter()
            .map(|i| c.candidates[i].target.id.to_string())
            .collect()
    }

    #[test]
    fn cheapest_meeting_the_floor_first_and_unpriced_last() {
        let c = Choice {
            policy: ChoicePolicy::Cheapest,
            candidates: vec![
                cand("strong", Some((2.5, 10.0)), Some(0.9), 1.0),
                cand("unpriced", None, Some(0.8), 1.0),
                cand("tiny", Some((0.01, 0.02)), Some(0.4), 1.0),
                cand("mid", Some((0.15, 0.6)), Some(0.75), 1.0),
            ],
            quality_floor: Some(0.7),
            balancer: None,
            learned: None,
        };
        assert_eq!(
            ids(&c, c.order(0.0)),
            ["mid", "strong", "unpriced"],
            "tiny is below the floor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fastest_follows_live_ttft() {
        let c = Choice {
            policy: ChoicePolicy::Fastest,
            candidates: vec![cand("a", None, None, 1.0), cand("b", None, None, 1.0)],
            quality_floor: None,
            balancer: None,
            learned: None,
        };
        c.candidates[0]
            .target
            .observe_ttft(Duration::from_millis(300));
        c.candidates[1]
            .target
            .observe_ttft(Duration::from_millis(100));
        assert_eq!(ids(&c, c.order(0.0)), ["b", "a"]);
        // A slow sample takes effect at once (the peak), fast ones decay it gradually.
        c.candidates[1]
            .target
            .observe_ttft(Duration::from_millis(900));
        assert_eq!(ids(&c, c.order(0.0)), ["a", "b"]);
        c.candidates[1]
            .target
            .observe_ttft(Duration::from_millis(100));
        assert_eq!(
            c.candidates[1].target.ttft_estimate(),
            Some(Duration::from_millis(740))
        );
    }

    #[test]
    fn learned_puts_strong_or_cheap_first() {
        let c = Choice {
            policy: ChoicePolicy::Learned,
            candidates: vec![
                cand("weak", Some((0.1, 0.2)), Some(0.6), 1.0),
                cand("strong", Some((2.5, 10.0)), Some(0.9), 1.0),
            ],
            quality_floor: None,
            balancer: None,
            learned: None,
        };
        assert_eq!(ids(&c, c.order_with(0.0, Some(true))), ["strong", "weak"]);
        assert_eq!(ids(&c, c.order_with(0.0, Some(false))), ["weak", "strong"]);
    }

    #[test]
    fn weighted_draws_in_proportion() {
        let c = Choice {
            policy: ChoicePolicy::Weighted,
            candidates: vec![cand("a", None, None, 1.0), cand("b", None, None, 3.0)],
            quality_floor: None,
            balancer: None,
            learned: None,
        };
        assert_eq!(ids(&c, c.order(0.1)), ["a", "b"]);
        assert_eq!(ids(&c, c.order(0.3)), ["b", "a"]);
        let firsts_b = (0..1000)
            .filter(|i| c.order(*i as f64 / 1000.0)[0] == 1)
            .count();
        assert_eq!(firsts_b, 750);
    }
}
