//! Blocking work from async code: a decision's fsync, a tool run, without
//! starving the runtime, and with a panic caught and named.

/// Blocking work that panicked; the panic's message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Panicked(pub String);

impl Panicked {
    /// The panic's message, from the payload `catch_unwind` returns.
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Panicked {
        Panicked(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()),
        )
    }
}

/// Runs blocking work without starving the runtime: in place on a
/// multi-threaded runtime (the worker hands its other tasks to a sibling,
/// and the call pays no thread hand-off), on the blocking pool otherwise.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Panicked> {
    let guarded = move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|p| Panicked::from_payload(&*p))
    };
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(guarded),
        _ => tokio::task::spawn_blocking(guarded)
            .await
            .unwrap_or_else(|e| Err(Panicked(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_returned_with_its_message() {
        let out = run_blocking(|| -> u8 { panic!("boom {}", 7) }).await;
        assert_eq!(out.unwrap_err().0, "boom 7");
        assert_eq!(run_blocking(|| 3).await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_in_place_on_a_multi_threaded_runtime() {
        let out = run_blocking(|| -> u8 { panic!("static") }).await;
        assert_eq!(out.unwrap_err().0, "static");
    }
}
