//! The "finish" phase: always runs, once per request, success or failure, and hands the
//! outcome to the meter off the request path (a tracked task waits for queue room, so under
//! overload the meter applies backpressure instead of dropping records).

use std::{sync::Arc, time::Instant};

use switchyard_meter::Outcome;
use switchyard_providers::{ProviderError, StreamSummary};

use crate::state::Gateway;

/// A request's outcome under construction.
pub struct Finish {
    pub gw: Arc<Gateway>,
    pub outcome: Outcome,
    pub accepted: Instant,
    /// Time spent waiting on providers before the response was handed to the server.
    pub upstream_before_response: std::time::Duration,
    /// When the response was handed to the server (streams: with the first token).
    pub first_content: Option<Instant>,
    /// When the attempt that served a stream started (its upstream latency runs to the end).
    pub serving_attempt_started: Option<Instant>,
    /// The balancer and replica that served, told when the request ends.
    pub balance_ticket: Option<(Arc<switchyard_balance::Balance>, usize)>,
    /// The request's admission place, held until the request ends (streams: their last byte).
    pub in_flight: Option<crate::state::InFlight>,
    /// The semantic classification still running beside the request, where the class cannot
    /// change its targets: the record takes the class when it is known.
    pub class_pending: Option<tokio::task::JoinHandle<switchyard_classify::Classification>>,
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Finish {
    pub fn first_content(&mut self) {
        if self.first_content.is_none() {
            let now = Instant::now();
            self.first_content = Some(now);
            self.outcome.ttft_ms = Some(ms(now - self.accepted));
            // The gateway's own time: everything up to the first token that was not spent
            // waiting on the provider.
            let before = now - self.accepted;
            self.outcome.overhead_us = Some(
                before
                    .saturating_sub(self.upstream_before_response)
                    .as_secs_f64()
                    * 1e6,
            );
        }
    }

    pub fn stream_ended(mut self, s: StreamSummary) {
        self.outcome.usage = s.usage;
        if s.usage.is_none() {
            self.outcome.output_text = Some(s.output_text);
        }
        if s.response_model.is_some() {
            self.outcome.response_model = s.response_model;
        }
        if let Some(e) = s.energy {
            self.outcome.provider_energy_wh = Some(e.wh);
            self.outcome.provider_energy_method = Some(e.method);
        }
        self.send();
    }

    pub fn stream_failed(mut self, e: &ProviderError) {
        self.outcome.error_type = Some(e.type_name());
        self.send();
    }

    pub fn client_went_away(mut self) {
        // 499: nginx's "client closed request", the conventional code for it.
        self.outcome.status = 499;
        self.outcome.error_type = Some("client_closed".into());
        self.send();
    }

    /// Completes the outcome and queues it for the meter.
    pub fn send(mut self) {
        let now = Instant::now();
        self.outcome.finished_at_ms = unix_ms();
        self.outcome.latency_ms = ms(now - self.accepted);
        if let Some(s) = self.serving_attempt_started {
            self.outcome.upstream_latency_ms = Some(ms(now - s));
        }
        if !self.outcome.stream || self.first_content.is_none() {
            // Whole answers: time to first token is the whole answer's time.
            if self.outcome.stream {
                self.outcome.ttft_ms = None;
            } else if self.outcome.status == 200 {
                self.outcome.ttft_ms = Some(self.outcome.latency_ms);
            }
            if self.outcome.overhead_us.is_none() {
                let own = (now - self.accepted).saturating_sub(self.upstream_before_response);
                self.outcome.overhead_us = Some(own.as_secs_f64() * 1e6);
            }
        }
        if let Some((b, i)) = self.balance_ticket.take() {
            // Time per output token, as OpenTelemetry defines it: (duration − TTFT) / (n − 1).
            let tpot = match (self.first_content, self.outcome.usage) {
                (Some(first), Some(u)) if u.output_tokens > 1 => {
                    Some((now - first) / (u.output_tokens.min(u32::MAX as u64) as u32 - 1))
                }
                _ => None,
            };
            use switchyard_balance::Balancer as _;
            b.on_end(i, tpot, tokio::time::Instant::now());
        }
        let mut outcome = std::mem::take(&mut self.outcome);
        if let Some(pending) = self.class_pending.take() {
            let meter = self.gw.meter.clone();
            self.gw.tasks.spawn(async move {
                // A classification task that panicked leaves the record without a class.
                if let Ok(c) = pending.await {
                    outcome.class = c.class;
                }
                meter.record(outcome).await
            });
            return;
        }
        // Straight into the queue when it has room (the usual case): a task per request would
        // cost an allocation and a scheduling round. Only a full queue needs a waiting task.
        if let Err(outcome) = self.gw.meter.try_record(outcome) {
            let meter = self.gw.meter.clone();
            self.gw
                .tasks
                .spawn(async move { meter.record(outcome).await });
        }
    }
}

pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
