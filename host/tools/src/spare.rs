//! Instances made ahead of their calls: a caller's spare, and the budget
//! that bounds how many may exist at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::Store;
use wasmtime::component::ResourceTable;

use crate::bindings::ToolComponent;
use crate::call_state::CallState;

/// Most instances made ahead of their calls at once without pooling,
/// where no pool bounds them.
pub(crate) const MAX_ON_DEMAND_SPARES: u32 = 64;

/// One caller's instance made before its call arrives, and the instance
/// of its last call, not yet freed.
///
/// Instantiating and freeing are most of a short call's cost, and both can
/// happen while nothing waits: a caller (the broker's connection) calls
/// [`ToolRuntime::refill`] once it has answered, and the next call of the
/// same component starts in an instance that exists already. That
/// instance is still fresh: made for this call alone, never called before,
/// and given its caller, grants and deadlines only when the call arrives.
/// Made with no grants, it cannot have touched anything; a component whose
/// instantiation reaches the host at all is never made ahead.
#[derive(Default)]
pub struct Spare {
    pub(crate) ready: Option<Ready>,
    pub(crate) spent: Option<Store<CallState>>,
}

pub(crate) struct Ready {
    pub(crate) component: u64,
    pub(crate) memory_bytes: usize,
    pub(crate) store: Store<CallState>,
    pub(crate) instance: ToolComponent,
    pub(crate) _slot: SpareSlot,
}

impl Spare {
    /// Whether an instance is ready for a call.
    pub fn is_ready(&self) -> bool {
        self.ready.is_some()
    }
}

/// Keeps a finished call's instance in `spare`, to be freed off the call
/// path, with nothing the call could still act through: its resource table
/// goes now, and with it any HTTP request the guest started and never
/// awaited (which freeing the store aborts), and its workspace.
pub(crate) fn retire(spare: &mut Spare, mut store: Store<CallState>) {
    let state = store.data_mut();
    state.table = ResourceTable::new();
    state.workspace = None;
    spare.spent = Some(store);
}

pub(crate) struct SpareBudget {
    pub(crate) live: std::sync::atomic::AtomicU32,
    pub(crate) max: u32,
}

impl SpareBudget {
    pub(crate) fn take(self: &Arc<Self>) -> Option<SpareSlot> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| SpareSlot(self.clone()))
    }
}

/// One unit of [`SpareBudget`], given back when the instance it paid for
/// is used or dropped.
pub(crate) struct SpareSlot(Arc<SpareBudget>);

impl Drop for SpareSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_spares_and_takes_back_what_is_dropped() {
        let budget = Arc::new(SpareBudget {
            live: Default::default(),
            max: 2,
        });
        let a = budget.take().expect("first");
        let b = budget.take().expect("second");
        assert!(budget.take().is_none(), "the third is over the budget");
        drop(a);
        let c = budget.take().expect("a slot was given back");
        drop((b, c));
        assert_eq!(budget.live.load(Ordering::Acquire), 0);
    }
}
