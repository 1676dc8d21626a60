//! The HTTP API: OpenAI-compatible endpoints plus health and metrics, and the request phases
//! accept → authenticate and govern → classify → pick a target → call → stream back → finish.

use std::{
    convert::Infallible,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use switchyard_api::{
    openai::{ChatRequest, EmbeddingsRequest, ModelList, ModelObject},
    ApiError, ErrorKind,
};
use switchyard_classify::Begun;
use switchyard_meter::Outcome;
use switchyard_providers::{ChatCall, EmbeddingsCall, ProviderErrorKind};
use switchyard_router::Route;

use crate::{
    attempt::{self, Served},
    finish::{unix_ms, Finish},
    relay::{Face, Relay},
    state::{Gateway, KeyInfo},
};

/// The router, callable in-process by tests.
pub fn app(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions::<Body>))
        .route("/v1/messages", post(anthropic_messages::<Body>))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gw)
}

/// What `serve` runs: the two chat routes (OpenAI, Anthropic) go straight to their handlers,
/// every other request through [`app`]'s router. Why: they carry nearly all the traffic, and
/// the router's per-request work (path match, a boxed handler future, the matched-path
/// extension, a content-length header the server writes anyway) was 6 of the 52 allocations a
/// request cost the workers, and about 4% of the CPU per request (docs/benchmarks.md). Every
/// gateway test goes through it; the router still answers their paths' other methods (405).
#[derive(Clone)]
pub struct GatewayService {
    gw: Arc<Gateway>,
    router: Router,
}

impl GatewayService {
    pub fn new(gw: Arc<Gateway>) -> Self {
        GatewayService {
            router: app(gw.clone()),
            gw,
        }
    }
}

type BoxedResponse =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>;

/// What the gateway's connection loop and axum's router both hand over: the body the
/// connection read (`switchyard-h1`), or axum's boxed one (in tests of the router).
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<axum::BoxError>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<axum::BoxError>> + Send + Unpin + 'static
{
}

impl tower_service::Service<Request> for GatewayService {
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures_util::future::Either<BoxedResponse, axum::routing::future::RouteFuture<Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.handle(req)
    }
}

impl GatewayService {
    /// Answers one request: the chat routes go straight to their handlers (no router lookup on
    /// the hot path, and the body as the connection read it, not boxed), everything else through
    /// axum's router.
    pub fn handle<B: RequestBody>(
        &self,
        req: http::Request<B>,
    ) -> <Self as tower_service::Service<Request>>::Future {
        use futures_util::future::Either;
        if req.method() == http::Method::POST {
            match req.uri().path() {
                "/v1/chat/completions" => {
                    let gw = self.gw.clone();
                    return Either::Left(Box::pin(async move {
                        Ok(chat_completions(State(gw), req).await)
                    }));
                }
                "/v1/messages" => {
                    let gw = self.gw.clone();
                    return Either::Left(Box::pin(async move {
                        Ok(anthropic_messages(State(gw), req).await)
                    }));
                }
                _ => {}
            }
        }
        Either::Right(tower_service::Service::call(
            &mut self.router.clone(),
            req.map(Body::new),
        ))
    }

    /// [`GatewayService::handle`] as the connection loop calls it: the answer itself (this
    /// service never fails; its errors are answers).
    pub fn handle_infallible<B: RequestBody>(
        &self,
        req: http::Request<B>,
    ) -> impl std::future::Future<Output = Response> + Send + 'static {
        let answer = self.handle(req);
        async move {
            match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}

/// The body of an answer the connection loop gives itself (a malformed request, a timeout):
/// an error in the shape of the API the path belongs to, so SDKs read it as they read ours.
pub fn connection_error_body(
    path: Option<&str>,
    _status: http::StatusCode,
    message: &str,
) -> (&'static str, Bytes) {
    let e = ApiError::invalid(message);
    let body = match path {
        Some(p) if p.starts_with("/v1/messages") => crate::messages::error_body(&e),
        _ => e.to_openai_json(),
    };
    ("application/json", Bytes::from(body))
}

/// The API shape a client speaks: it decides error bodies and answer formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceKind {
    OpenAi,
    Anthropic,
}

/// An OpenAI error response.
pub fn error_response(e: &ApiError, request_id: Option<&str>) -> Response {
    face_error(FaceKind::OpenAi, e, request_id)
}

/// An error response in the client's shape.
pub fn face_error(face: FaceKind, e: &ApiError, request_id: Option<&str>) -> Response {
    let body = match face {
        FaceKind::OpenAi => e.to_openai_json(),
        FaceKind::Anthropic => crate::messages::error_body(e),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() =
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = e.retry_after_secs {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert(X_REQUEST_ID, id);
    }
    resp
}

async fn not_found(req: Request) -> Response {
    let e = ApiError::new(
        ErrorKind::NotFound,
        format!("Unknown request URL: {} {}", req.method(), req.uri().path()),
    )
    .with_code("unknown_url");
    error_response(&e, None)
}

async fn method_not_allowed(req: Request) -> Response {
    let e = ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "Method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    );
    error_response(&e, None)
}

async fn healthz() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
        .into_response()
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.draining.load(Ordering::Relaxed) {
        let e = ApiError::new(ErrorKind::Unavailable, "shutting down");
        return error_response(&e, None);
    }
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ready\"}",
    )
        .into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    gw.meter.render_metrics(&mut out);
    use std::fmt::Write as _;
    // One unlabelled series: its HELP and TYPE lines, then its value.
    let mut series = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    series(
        "switchyard_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        gw.started_at.elapsed().as_secs_f64(),
    );
    series(
        "switchyard_requests_in_flight",
        "gauge",
        "Requests being served now (limit: max_in_flight).",
        gw.admission.in_flight() as f64,
    );
    series(
        "switchyard_requests_refused_overload_total",
        "counter",
        "Requests refused with 503 because max_in_flight were being served.",
        gw.admission.refused() as f64,
    );
    if let Some(load) = gw.minilm.as_ref().map(|g| g.load()) {
        series(
            "switchyard_minilm_forwards_running",
            "gauge",
            "MiniLM forwards (semantic class step, learned routers) running now (limit: classes.semantic.max_concurrent).",
            load.running as f64,
        );
        series(
            "switchyard_minilm_waiting",
            "gauge",
            "Requests waiting for a MiniLM forward now.",
            load.waiting as f64,
        );
        series(
            "switchyard_minilm_busy_total",
            "counter",
            "Requests that went without their MiniLM forward: they waited classes.semantic.max_wait_ms for it, or found the queue of forwards beside requests full (the busy class; a learned route's config order).",
            load.busy_total as f64,
        );
        series(
            "switchyard_minilm_beside_queued",
            "gauge",
            "Semantic steps queued or running beside their requests now (routes whose targets do not depend on the class): records waiting for their class.",
            switchyard_classify::beside::in_lane() as f64,
        );
        let split = switchyard_classify::split_counts();
        series(
            "switchyard_minilm_helped_tiles_total",
            "counter",
            "Items of MiniLM forwards (matrix-product tiles and attention heads) computed by a helper thread (classes.semantic.split_forward).",
            split.helped_tiles as f64,
        );
        series(
            "switchyard_minilm_taken_back_tiles_total",
            "counter",
            "Items (tiles or attention heads) a helper thread claimed but had not finished in time, computed again by the forward's own thread.",
            split.taken_back_tiles as f64,
        );
    }
    if let Some((in_use, free)) = crate::memory::heap_bytes() {
        let _ = writeln!(
            out,
            "# HELP switchyard_heap_bytes Heap bytes by state: in_use (live allocations) or free (resident beyond live allocations: pages not yet purged, fragments, allocator metadata)."
        );
        let _ = writeln!(out, "# TYPE switchyard_heap_bytes gauge");
        let _ = writeln!(out, "switchyard_heap_bytes{{state=\"in_use\"}} {in_use}");
        let _ = writeln!(out, "switchyard_heap_bytes{{state=\"free\"}} {free}");
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let key = match authenticate(&gw, &headers) {
        Ok(k) => k,
        Err(e) => return error_response(&e, None),
    };
    let data = gw
        .route_names
        .iter()
        .filter(|r| {
            key.as_ref()
                .is_none_or(|k| k.routes.is_empty() || k.routes.contains(r))
        })
        .map(|r| ModelObject {
            id: r.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "switchyard".into(),
        })
        .collect();
    let list = ModelList {
        object: "list".into(),
        data,
    };
    axum::Json(list).into_response()
}

/// Reads the caller's key from `Authorization: Bearer` or `x-api-key`.
fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Option<KeyInfo>, ApiError> {
    if gw.keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    match presented {
        None | Some("") => Err(ApiError::new(
            ErrorKind::Authentication,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
        )
        .with_code("missing_api_key")),
        Some(k) => gw.keys.get(k).cloned().map(Some).ok_or_else(|| {
            ApiError::new(ErrorKind::Authentication, "Incorrect API key provided.")
                .with_code("invalid_api_key")
        }),
    }
}

/// Reads the body up to the configured limit.
async fn read_body<B: RequestBody>(gw: &Gateway, req: http::Request<B>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "Request body is larger than the limit of {} bytes",
                gw.max_body_bytes
            ),
        )
    };
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > gw.max_body_bytes {
            return Err(too_large());
        }
    }
    let mut limited = http_body_util::Limited::new(req.into_body(), gw.max_body_bytes);
    // Most bodies come as one frame: keep it as it came; join only when more follow.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = limited.frame().await {
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::invalid(format!("could not read the request body: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        match (&mut joined, first.take()) {
            (Some(j), _) => j.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(f)) => {
                let mut j = bytes::BytesMut::with_capacity(f.len() + data.len());
                j.extend_from_slice(&f);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    Ok(match joined {
        Some(j) => j.freeze(),
        None => first.unwrap_or_default(),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = if e.is_syntax() || e.is_eof() {
            format!("We could not parse the JSON body of your request: {e}")
        } else {
            format!("Invalid request body: {e}")
        };
        ApiError::invalid(msg)
    })
}

/// What every request carries through its phases.
struct Ctx {
    id: String,
    accepted: Instant,
    started_at_ms: i64,
    key: Option<KeyInfo>,
    task: Option<String>,
    /// The `x-switchyard-class` header as sent.
    class_header: Option<String>,
    /// The workload class, once decided.
    class: Option<String>,
    /// Admission, handed to the request's [`Finish`].
    in_flight: Option<crate::state::InFlight>,
}

impl Ctx {
    fn new(
        gw: &Gateway,
        headers: &HeaderMap,
        in_flight: crate::state::InFlight,
    ) -> Result<Ctx, (ApiError, String)> {
        let id = crate::ids::request_id();
        let key = authenticate(gw, headers).map_err(|e| (e, id.clone()))?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let class_header = header("x-switchyard-class");
        // Without configured classes, the header or the key's default is the class as given.
        let class = class_header.clone().or_else(|| {
            key.as_ref()
                .and_then(|k| k.default_class.as_deref().map(str::to_string))
        });
        Ok(Ctx {
            id,
            accepted: Instant::now(),
            started_at_ms: unix_ms(),
            key,
            task: header("x-switchyard-task"),
            class_header,
            class,
            in_flight: Some(in_flight),
        })
    }

    fn outcome(&self, operation: &'static str, route: Arc<str>, stream: bool) -> Outcome {
        Outcome {
            id: self.id.clone(),
            started_at_ms: self.started_at_ms,
            operation,
            route,
            class: self.class.clone(),
            key: self.key.as_ref().map(|k| k.name.to_string()),
            team: self
                .key
                .as_ref()
                .and_then(|k| k.team.as_deref().map(str::to_string)),
            task: self.task.clone(),
            stream,
            status: 200,
            ..Default::default()
        }
    }

    /// Finds the route and checks the key may use it.
    fn route(&self, gw: &Gateway, model: &str) -> Result<Arc<Route>, ApiError> {
        let route = gw.routes.get(model).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
            .with_param("model")
            .with_code("model_not_found")
        })?;
        if let Some(k) = &self.key {
            if !k.routes.is_empty() && !k.routes.iter().any(|r| r == model) {
                return Err(ApiError::new(
                    ErrorKind::PermissionDenied,
                    format!("key '{}' may not use the model `{model}`", k.name),
                )
                .with_param("model"));
            }
        }
        Ok(route)
    }

    /// The request's finish; it takes the admission place along when the request goes on to a
    /// provider (a refusal leaves it to be freed with the context).
    fn finish(&self, gw: &Arc<Gateway>, outcome: Outcome) -> Finish {
        Finish {
            in_flight: None,
            gw: gw.clone(),
            outcome,
            accepted: self.accepted,
            upstream_before_response: std::time::Duration::ZERO,
            first_content: None,
            serving_attempt_started: None,
            balance_ticket: None,
            class_pending: None,
        }
    }
}

/// Records a request refused before it reached any provider.
fn refuse(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    operation: &'static str,
    route: &str,
    e: &ApiError,
) -> Response {
    refuse_as(FaceKind::OpenAi, gw, ctx, operation, route, e)
}

fn refuse_as(
    face: FaceKind,
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    operation: &'static str,
    route: &str,
    e: &ApiError,
) -> Response {
    let mut o = ctx.outcome(operation, route.into(), false);
    o.status = e.status();
    o.error_type = Some(e.kind.as_str().to_string());
    ctx.finish(gw, o).send();
    face_error(face, e, Some(&ctx.id))
}

/// The accept phase shared by the POST endpoints: authenticate, read the body within its
/// limit, parse it. A refusal is already an answer in the client's shape (and in the ledger).
async fn accept<T: serde::de::DeserializeOwned, B: RequestBody>(
    gw: &Arc<Gateway>,
    req: http::Request<B>,
    face: FaceKind,
    operation: &'static str,
) -> Result<(Ctx, T, Bytes), Response> {
    let Some(in_flight) = gw.admission.admit() else {
        return Err(overloaded(gw, face));
    };
    let ctx = Ctx::new(gw, req.headers(), in_flight)
        .map_err(|(e, id)| face_error(face, &e, Some(&id)))?;
    let parsed = match read_body(gw, req).await {
        Ok(body) => parse_json(&body).map(|r| (r, body)),
        Err(e) => Err(e),
    };
    match parsed {
        Ok((r, body)) => Ok((ctx, r, body)),
        Err(e) => Err(refuse_as(face, gw, &ctx, operation, "", &e)),
    }
}

/// The answer past `max_in_flight`: 503 with `Retry-After`, in the client's error shape (the
/// SDKs retry 503 after the delay). Not in the ledger: the request was never accepted, and
/// writing a record per refusal would add load exactly when there is too much; counted in
/// `switchyard_requests_refused_overload_total`.
fn overloaded(gw: &Gateway, face: FaceKind) -> Response {
    let e = ApiError::new(
        ErrorKind::Unavailable,
        format!(
            "Switchyard is serving its limit of {} requests at once (max_in_flight); retry shortly",
            gw.admission.limit()
        ),
    )
    .with_code("overloaded")
    .with_retry_after(Some(1));
    face_error(face, &e, None)
}

async fn chat_completions<B: RequestBody>(
    State(gw): State<Arc<Gateway>>,
    req: http::Request<B>,
) -> Response {
    match accept::<ChatRequest, B>(&gw, req, FaceKind::OpenAi, "chat").await {
        Ok((ctx, request, body)) => {
            serve_chat(gw, ctx, request, Some(body), FaceKind::OpenAi).await
        }
        Err(refused) => refused,
    }
}

async fn anthropic_messages<B: RequestBody>(
    State(gw): State<Arc<Gateway>>,
    req: http::Request<B>,
) -> Response {
    let face = FaceKind::Anthropic;
    let (ctx, request, _) =
        match accept::<switchyard_api::anthropic::MessagesRequest, B>(&gw, req, face, "chat").await
        {
            Ok(accepted) => accepted,
            Err(refused) => return refused,
        };
    let model = request.model.clone();
    // Translated, so there are no OpenAI-shaped bytes to forward as sent.
    match crate::messages::to_chat_request(request) {
        Ok(r) => serve_chat(gw, ctx, r, None, face).await,
        Err(e) => refuse_as(face, &gw, &ctx, "chat", &model, &e),
    }
}

/// Whether the learned router sends this request to the strong model (MiniLM, off the async
/// workers); none, so the route keeps its config order, on a router error or when no forward
/// came free within `classes.semantic.max_wait_ms`.
async fn learned_wants_strong(
    gw: &Gateway,
    router: Arc<dyn switchyard_router::StrongPredictor>,
    text: String,
) -> Option<bool> {
    // The forward waits its turn with the semantic step's: one bound on MiniLM per gateway.
    let permit = match &gw.minilm {
        Some(gate) => Some(gate.enter().await?),
        None => None,
    };
    let decide = move || {
        let _forward = permit;
        router.wants_strong(&text)
    };
    match tokio::task::spawn_blocking(decide).await {
        Ok(Ok(strong)) => Some(strong),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "learned router failed; using config order");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "learned router task failed; using config order");
            None
        }
    }
}

/// Whether a request's class can change the targets `route` offers it: the route has a choice
/// of its own for some class, or a self-hosted-only class would lose some of its targets.
fn class_picks_targets(gw: &Gateway, route: &Route) -> bool {
    !route.classes.is_empty()
        || (!gw.self_hosted_only.is_empty()
            && route
                .default
                .candidates
                .iter()
                .any(|c| !c.target.self_hosted))
}

/// Validate → route → call with fallback → answer, for both faces.
/// `original`: the JSON body `request` was parsed from, when the client spoke OpenAI's API.
async fn serve_chat(
    gw: Arc<Gateway>,
    mut ctx: Ctx,
    request: ChatRequest,
    original: Option<Bytes>,
    face: FaceKind,
) -> Response {
    if let Err(e) = request.validate() {
        return refuse_as(face, &gw, &ctx, "chat", &request.model, &e);
    }
    let route = match ctx.route(&gw, &request.model) {
        Ok(r) => r,
        Err(e) => return refuse_as(face, &gw, &ctx, "chat", &request.model, &e),
    };
    // Classify: header, key default, rules, then the semantic step (off the async workers).
    let mut class_pending = None;
    if let Some(classifier) = &gw.classifier {
        let key_default = ctx.key.as_ref().and_then(|k| k.default_class.as_deref());
        match classifier.begin(&request, ctx.class_header.as_deref(), key_default) {
            Ok(Begun::Done(c)) => ctx.class = c.class,
            Ok(Begun::Semantic(step)) if !class_picks_targets(&gw, &route) => {
                // The class only labels this request's record: MiniLM runs beside the upstream
                // call instead of before it, and the record waits for it.
                class_pending = Some(gw.tasks.spawn(step.run_beside()));
            }
            Ok(Begun::Semantic(step)) => ctx.class = step.run().await.class,
            Err(e) => {
                // Not a defined class: recording it would let clients invent metric labels.
                ctx.class = None;
                let e = ApiError::invalid(e.to_string()).with_param("x-switchyard-class");
                return refuse_as(face, &gw, &ctx, "chat", &route.name, &e);
            }
        }
    }
    // Pick the targets: the class's choice on this route, within the governance policies.
    let self_hosted_only = ctx
        .class
        .as_ref()
        .is_some_and(|c| gw.self_hosted_only.contains(c));
    let choice = route.choice(ctx.class.as_deref());
    let prompt = choice
        .balancer
        .as_ref()
        .filter(|b| b.config().policy == switchyard_balance::Policy::PrefixAffinity)
        .map(|_| request.prompt_text());
    // The learned policy: does this request need the strong model? (MiniLM: off the workers.)
    let strong = match &choice.learned {
        Some(p) if choice.policy == switchyard_router::ChoicePolicy::Learned => {
            let text = switchyard_classify::semantic_text(&request, 4096);
            learned_wants_strong(&gw, p.clone(), text).await
        }
        _ => None,
    };
    let mut plan = attempt::Plan::new(
        choice,
        |t| !self_hosted_only || t.self_hosted,
        prompt.as_deref(),
        strong,
    );
    if plan.is_empty() {
        let e = ApiError::new(
            ErrorKind::PermissionDenied,
            format!(
                "no target of `{}` may serve class '{}': it is restricted to self-hosted targets",
                route.name,
                ctx.class.as_deref().unwrap_or("")
            ),
        );
        return refuse_as(face, &gw, &ctx, "chat", &route.name, &e);
    }
    let stream = request.is_stream();
    let include_usage = request.wants_stream_usage();
    let request = Arc::new(request);
    let mut finish = ctx.finish(&gw, ctx.outcome("chat", route.name.clone(), stream));
    finish.in_flight = ctx.in_flight.take();
    finish.outcome.request = Some(request.clone());
    finish.class_pending = class_pending;
    // Dropped if the client goes away while we wait: the guard still records the request.
    let mut guard = PendingGuard(Some(finish));

    let walk = attempt::walk(&route.name, &mut plan, |target| {
        let call = ChatCall {
            request: request.clone(),
            model: target.model.clone(),
            original: original.clone(),
        };
        attempt::chat_attempt(target, call)
    })
    .await;

    let Some(mut finish) = guard.0.take() else {
        return face_error(
            face,
            &ApiError::new(ErrorKind::Internal, "request state lost"),
            Some(&ctx.id),
        );
    };
    finish.upstream_before_response = walk.upstream_time;
    finish.outcome.attempts = walk.attempts;
    finish.outcome.fallbacks = walk.fallbacks;
    if let (Some(b), Some(i)) = (&choice.balancer, walk.replica) {
        finish.balance_ticket = Some((b.clone(), i));
    }
    let served_by = match &walk.result {
        Ok((_, t)) => Some(t.clone()),
        Err(_) => walk.last_target.clone(),
    };
    if let Some(t) = &served_by {
        finish.outcome.provider = Some(t.provider_name.clone());
        finish.outcome.provider_kind = Some(t.provider.kind());
        finish.outcome.target = Some(t.id.clone());
        finish.outcome.model = Some(t.model.clone());
    }
    match walk.result {
        Err(e) => {
            let mut api = e.to_api_error();
            if e.kind == ProviderErrorKind::InvalidRequest && e.message.contains("context") {
                api = api.with_code("context_length_exceeded");
            }
            finish.outcome.status = api.status();
            finish.outcome.error_type = Some(e.type_name());
            finish.outcome.upstream_latency_ms = Some(crate::finish::ms(walk.upstream_time));
            finish.send();
            let mut resp = face_error(face, &api, Some(&ctx.id));
            // An OpenAI-compatible provider's own client-error body is relayed as it came.
            if let (FaceKind::OpenAi, Some(body), ProviderErrorKind::Status(400..=422)) =
                (face, &e.body, e.kind)
            {
                if served_by
                    .as_ref()
                    .is_some_and(|t| t.provider.kind() == "openai")
                    && serde_json::from_slice::<serde_json::Value>(body)
                        .is_ok_and(|v| v.get("error").is_some())
                {
                    *resp.body_mut() = Body::from(body.clone());
                }
            }
            resp
        }
        Ok((Served::Complete(c), target)) => {
            finish.outcome.upstream_latency_ms = Some(crate::finish::ms(walk.upstream_time));
            finish.outcome.usage = c.usage;
            finish.outcome.response_model = c.response_model.clone();
            finish.outcome.output_text = c.output_text.clone();
            if let Some(e) = c.energy {
                finish.outcome.provider_energy_wh = Some(e.wh);
                finish.outcome.provider_energy_method = Some(e.method);
            }
            let cost = c.usage.and_then(|u| cost_of(&gw, &target, &u));
            let body = match face {
                FaceKind::OpenAi => Ok(c.body),
                FaceKind::Anthropic => {
                    crate::messages::completion_to_message(&c.body, c.usage, &ctx.id)
                        .map(Bytes::from)
                }
            };
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    finish.outcome.status = e.status();
                    finish.outcome.error_type = Some(e.kind.as_str().to_string());
                    finish.send();
                    return face_error(face, &e, Some(&ctx.id));
                }
            };
            finish.send();
            let mut resp = Response::new(Body::from(body));
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            served_headers(h, &ctx.id, &target.id, walk.attempts);
            if let Some(v) = cost.and_then(usd_header) {
                h.insert(X_SWITCHYARD_COST_USD, v);
            }
            resp
        }
        Ok((
            Served::Stream {
                head,
                rest,
                attempt_started,
            },
            target,
        )) => {
            finish.serving_attempt_started = Some(attempt_started.into_std());
            let deadline = attempt_started + target.timeouts.total();
            let relay_face = match face {
                FaceKind::OpenAi => Face::OpenAi { include_usage },
                FaceKind::Anthropic => {
                    Face::Anthropic(Box::new(crate::messages::StreamTranslator::new(&ctx.id)))
                }
            };
            let relay = Relay::new(
                head,
                rest,
                target.timeouts.stream_idle(),
                deadline,
                relay_face,
                finish,
            );
            let mut resp = Response::new(Body::from_stream(relay));
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            served_headers(h, &ctx.id, &target.id, walk.attempts);
            resp
        }
    }
}

// Names built once: a `&str` name is parsed and checked again on every insert.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_SWITCHYARD_TARGET: HeaderName = HeaderName::from_static("x-switchyard-target");
const X_SWITCHYARD_ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const X_SWITCHYARD_COST_USD: HeaderName = HeaderName::from_static("x-switchyard-cost-usd");

fn served_headers(h: &mut HeaderMap, id: &str, target: &str, attempts: u32) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(X_REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(target) {
        h.insert(X_SWITCHYARD_TARGET, v);
    }
    // Nearly always 1: a static value, where formatting a number allocates twice.
    let attempts = match attempts {
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        n => HeaderValue::from(n),
    };
    h.insert(X_SWITCHYARD_ATTEMPTS, attempts);
}

/// Records the request if the handler is dropped (the client went away) before it finished.
struct PendingGuard(Option<Finish>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f.client_went_away();
        }
    }
}

async fn embeddings(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let (mut ctx, request, _) =
        match accept::<EmbeddingsRequest, _>(&gw, req, FaceKind::OpenAi, "embeddings").await {
            Ok(accepted) => accepted,
            Err(refused) => return refused,
        };
    if let Err(e) = request.validate() {
        return refuse(&gw, &ctx, "embeddings", &request.model, &e);
    }
    let route = match ctx.route(&gw, &request.model) {
        Ok(r) => r,
        Err(e) => return refuse(&gw, &ctx, "embeddings", &request.model, &e),
    };
    let request = Arc::new(request);
    let mut finish = ctx.finish(&gw, ctx.outcome("embeddings", route.name.clone(), false));
    finish.in_flight = ctx.in_flight.take();
    let mut guard = PendingGuard(Some(finish));
    let self_hosted_only = ctx
        .class
        .as_ref()
        .is_some_and(|c| gw.self_hosted_only.contains(c));
    let mut plan = attempt::Plan::new(
        route.choice(ctx.class.as_deref()),
        |t| !self_hosted_only || t.self_hosted,
        None,
        None,
    );
    let walk = attempt::walk(&route.name, &mut plan, |target| {
        let call = EmbeddingsCall {
            request: request.clone(),
            model: target.model.clone(),
        };
        async move {
            let limit = target.timeouts.total();
            match tokio::time::timeout(limit, target.provider.embeddings(call)).await {
                Ok(r) => r,
                Err(_) => Err(switchyard_providers::ProviderError::new(
                    ProviderErrorKind::Timeout,
                    format!(
                        "target '{}' gave no answer within {} ms",
                        target.id,
                        limit.as_millis()
                    ),
                )),
            }
        }
    })
    .await;
    let Some(mut finish) = guard.0.take() else {
        return error_response(
            &ApiError::new(ErrorKind::Internal, "request state lost"),
            Some(&ctx.id),
        );
    };
    finish.upstream_before_response = walk.upstream_time;
    finish.outcome.attempts = walk.attempts;
    finish.outcome.fallbacks = walk.fallbacks;
    finish.outcome.upstream_latency_ms = Some(crate::finish::ms(walk.upstream_time));
    let served_by = match &walk.result {
        Ok((_, t)) => Some(t.clone()),
        Err(_) => walk.last_target.clone(),
    };
    if let Some(t) = &served_by {
        finish.outcome.provider = Some(t.provider_name.clone());
        finish.outcome.provider_kind = Some(t.provider.kind());
        finish.outcome.target = Some(t.id.clone());
        finish.outcome.model = Some(t.model.clone());
    }
    match walk.result {
        Err(e) => {
            let api = e.to_api_error();
            finish.outcome.status = api.status();
            finish.outcome.error_type = Some(e.type_name());
            finish.send();
            error_response(&api, Some(&ctx.id))
        }
        Ok((c, target)) => {
            finish.outcome.usage = c.usage;
            finish.outcome.response_model = c.response_model.clone();
            if c.usage.is_none() {
                finish.outcome.input_text = Some(request.input_text());
            }
            let cost = c.usage.and_then(|u| cost_of(&gw, &target, &u));
            finish.send();
            let mut resp = Response::new(Body::from(c.body));
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            served_headers(h, &ctx.id, &target.id, walk.attempts);
            if let Some(v) = cost.and_then(usd_header) {
                h.insert(X_SWITCHYARD_COST_USD, v);
            }
            resp
        }
    }
}

/// A cost in US dollars to 8 decimals without `core::fmt`'s float formatting (1% of the
/// gateway's CPU per request in a profile). Reads as `format!("{cost:.8}")` does, except
/// possibly in the last digit of a value within a rounding error of a half (the scaled value is
/// rounded, not the exact binary one); the ledger keeps the full figure.
fn usd_header(cost: f64) -> Option<HeaderValue> {
    if !(cost.is_finite() && (0.0..1e9).contains(&cost)) {
        return HeaderValue::from_str(&format!("{cost:.8}")).ok();
    }
    let scaled = (cost * 1e8).round() as u64;
    let (whole, frac) = (scaled / 100_000_000, scaled % 100_000_000);
    // Written backwards from the end of the buffer: fraction, point, whole dollars.
    fn digits(buf: &mut [u8; 20], end: &mut usize, mut n: u64, min_digits: usize) {
        let start = *end;
        while n > 0 || start - *end < min_digits {
            *end -= 1;
            buf[*end] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    let mut buf = [0u8; 20];
    let mut end = buf.len();
    digits(&mut buf, &mut end, frac, 8);
    end -= 1;
    buf[end] = b'.';
    digits(&mut buf, &mut end, whole, 1);
    HeaderValue::from_bytes(&buf[end..]).ok()
}

/// The request's cost for the response header, from the same prices the ledger uses.
fn cost_of(
    gw: &Gateway,
    target: &switchyard_router::Target,
    usage: &switchyard_api::TokenUsage,
) -> Option<f64> {
    gw.prices
        .get(&*target.id)
        .map(|price| switchyard_meter::cost(price, usage))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::usd_header;

    #[test]
    fn cost_header_reads_as_eight_decimals() {
        for cost in [
            0.0,
            1e-8,
            0.000_123_45,
            0.001_65,
            0.5,
            1.0,
            12.345_678_9,
            987_654.321,
            1.5e-9,
            2e9,
        ] {
            assert_eq!(
                usd_header(cost).unwrap(),
                format!("{cost:.8}").as_str(),
                "{cost}"
            );
        }
        assert!(usd_header(f64::NAN).is_some_and(|v| v == "NaN"));
    }
}
