//! The dashboard's routes: the overview, the decisions list and its live
//! stream (server-sent events), one record, the policy set. Every page
//! reads the log through its own read-only connection, on a blocking
//! thread; none of them writes anything.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use corral_audit::{AuditReader, Filter, Record, format_micros};
use maud::Markup;
use tokio::sync::broadcast::error::TryRecvError;

use crate::Shared;
use crate::pages::{self, Decider, Overview, RecordPage};
use crate::query::{Filters, SHOWN, WINDOW, series, top_denied};

/// Arguments beyond this many characters are cut in lists and figures;
/// one record's own page shows them whole.
const CLIP: usize = 2048;
/// Live streams open at once; more are refused.
const MAX_STREAMS: usize = 16;
/// How often a live stream sends what was recorded since its last batch.
const LIVE_TICK: std::time::Duration = std::time::Duration::from_millis(100);
use crate::view::PolicyView;

/// What the dashboard shows: the log it reads and, when the host has
/// them, the policies in force.
#[derive(Clone)]
pub struct Dashboard {
    /// The audit log's database.
    pub audit: PathBuf,
    /// The policy set in force; `None` for a log served on its own.
    pub policies: Option<Arc<dyn PolicyView>>,
    /// Whether something writes this log while it is served, so that the
    /// decisions page streams new records.
    pub live: bool,
}

/// The newest [`WINDOW`] records, arguments cut to [`CLIP`].
fn recent(reader: &AuditReader) -> Result<Vec<Record>, corral_audit::AuditError> {
    let head = reader.head_seq()?;
    reader.query(&Filter {
        after_seq: Some(head.saturating_sub(WINDOW as i64)),
        clip_arguments: Some(CLIP),
        ..Filter::default()
    })
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// Runs `read` with a reader of the log on a blocking thread, at most
/// two at once (a page that floods the dashboard with requests waits in
/// line instead of taking every core); a failure becomes a page naming the
/// log and the error.
async fn with_reader(
    shared: &Shared,
    dashboard: &Dashboard,
    read: impl FnOnce(&AuditReader) -> Result<Response, corral_audit::AuditError> + Send + 'static,
) -> Response {
    let Ok(_turn) = shared.readers.clone().acquire_owned().await else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::problem("Stopping", "The host is stopping."),
        );
    };
    let path = dashboard.audit.clone();
    let shown = path.display().to_string();
    let done = tokio::task::spawn_blocking(move || {
        let reader = AuditReader::open(&path)?;
        read(&reader)
    })
    .await;
    match done {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::problem(
                "Cannot read the audit log",
                &format!("{shown}: {e}. Check the log with `corral audit verify --audit {shown}`."),
            ),
        ),
        Err(e) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::problem("Cannot read the audit log", &format!("{shown}: {e}")),
        ),
    }
}

fn no_dashboard() -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::problem("No dashboard", "This endpoint serves /metrics only."),
    )
}

pub(crate) async fn overview(State(shared): State<Shared>) -> Response {
    let Some(dashboard) = shared.dashboard.clone() else {
        return no_dashboard();
    };
    let policy_set = dashboard
        .policies
        .as_ref()
        .map(|p| (p.hash(), p.policies().len()));
    with_reader(&shared, &dashboard, move |reader| {
        let verify = reader.verify().map_err(|e| e.to_string());
        let recent = recent(reader)?;
        let top = top_denied(&recent, 10);
        let series = series(&recent, 24);
        Ok(page(
            StatusCode::OK,
            pages::overview(&Overview {
                verify,
                policy_set,
                top_denied: &top,
                series: &series,
                window: recent.len(),
            }),
        ))
    })
    .await
}

pub(crate) async fn decisions(
    State(shared): State<Shared>,
    Query(filters): Query<Filters>,
) -> Response {
    let Some(dashboard) = shared.dashboard.clone() else {
        return no_dashboard();
    };
    let live = dashboard.live;
    with_reader(&shared, &dashboard, move |reader| {
        let (rows, error) = match filters.clone().check() {
            Ok(checked) => {
                let recent = recent(reader)?;
                let mut rows: Vec<Record> =
                    recent.into_iter().filter(|r| checked.matches(r)).collect();
                let skip = rows.len().saturating_sub(SHOWN);
                (rows.split_off(skip), None)
            }
            Err(e) => (
                Vec::new(),
                Some(format!("{e}; nothing is listed until it is fixed")),
            ),
        };
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Ok(page(
            status,
            pages::decisions(&filters, &rows, error.as_deref(), live),
        ))
    })
    .await
}

pub(crate) async fn record(State(shared): State<Shared>, Path(seq): Path<i64>) -> Response {
    let Some(dashboard) = shared.dashboard.clone() else {
        return no_dashboard();
    };
    let policies = dashboard.policies.clone();
    with_reader(&shared, &dashboard, move |reader| {
        let found = reader.query(&Filter {
            after_seq: Some(seq.saturating_sub(1)),
            limit: Some(1),
            ..Filter::default()
        })?;
        let Some(record) = found.into_iter().find(|r| r.seq == seq) else {
            let head = reader.head_seq()?;
            return Ok(page(
                StatusCode::NOT_FOUND,
                pages::problem(
                    "No such record",
                    &format!("There is no record {seq}: the log's records are 1 to {head}."),
                ),
            ));
        };
        let children = reader.query(&Filter {
            parent: Some(seq),
            limit: Some(SHOWN),
            clip_arguments: Some(CLIP),
            ..Filter::default()
        })?;
        let texts = policies.as_ref().map(|p| p.policies()).unwrap_or_default();
        let deciders: Vec<Decider> = record
            .policy_ids
            .iter()
            .map(|id| Decider {
                id: id.clone(),
                text: texts.iter().find(|t| &t.id == id).cloned(),
            })
            .collect();
        let current_hash = policies.as_ref().map(|p| p.hash());
        Ok(page(
            StatusCode::OK,
            pages::record(&RecordPage {
                record: &record,
                children: &children,
                deciders: &deciders,
                current_hash: current_hash.as_deref(),
            }),
        ))
    })
    .await
}

pub(crate) async fn policies(State(shared): State<Shared>) -> Response {
    let Some(dashboard) = shared.dashboard.clone() else {
        return no_dashboard();
    };
    match &dashboard.policies {
        Some(p) => page(StatusCode::OK, pages::policies(&p.hash(), &p.policies())),
        None => page(
            StatusCode::NOT_FOUND,
            pages::problem(
                "Policies",
                "This log is served without its policies: the records name the policy ids and the set's hash.",
            ),
        ),
    }
}

/// One record as the live stream sends it (the page adds it as text).
fn row_json(r: &Record) -> String {
    serde_json::json!({
        "seq": r.seq,
        "time": format_micros(r.time_us),
        "agent": r.agent,
        "kind": r.kind.as_str(),
        "action": r.action,
        "decision": r.decision,
        "policy_ids": r.policy_ids,
        "arguments": r.arguments,
        "detail": r.detail,
    })
    .to_string()
}

pub(crate) async fn events(
    State(shared): State<Shared>,
    Query(filters): Query<Filters>,
) -> Response {
    let checked = match filters.check() {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    if shared.metrics.live_listeners() >= MAX_STREAMS {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} live streams are open already; close a dashboard tab"),
        )
            .into_response();
    }
    let live = shared.metrics.subscribe();
    let stop = shared.stop.clone();
    // Records are sent in batches, one event per tick: a person cannot
    // read faster, and a stream that sleeps between ticks is never woken
    // by the writer, so the call path does not pay for it per record.
    let stream = futures_util::stream::unfold(
        (live, stop, checked),
        |(mut live, mut stop, checked)| async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(LIVE_TICK) => {}
                    // The host is stopping: end the stream so that the
                    // server's graceful shutdown is not held open by it.
                    _ = stop.changed() => return None,
                }
                let mut rows = Vec::new();
                let event = loop {
                    match live.try_recv() {
                        Ok(r) if checked.matches(&r) => rows.push(row_json(&r)),
                        Ok(_) => {}
                        Err(TryRecvError::Lagged(_)) => {
                            break Some(Event::default().event("lagged").data("reload"));
                        }
                        Err(TryRecvError::Empty) => break None,
                        Err(TryRecvError::Closed) => return None,
                    }
                };
                let event = event.or_else(|| {
                    (!rows.is_empty()).then(|| {
                        Event::default()
                            .event("records")
                            .data(format!("[{}]", rows.join(",")))
                    })
                });
                if let Some(event) = event {
                    return Some((Ok::<_, Infallible>(event), (live, stop, checked)));
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
