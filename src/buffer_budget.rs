//! The process-wide budget of bytes buffered for incomplete frames.
//!
//! Each connection may buffer up to `--max-frame-bytes` of a frame that has not fully
//! arrived; without a global bound, N connections trickling large frames hold N times that.
//! Every connection charges the bytes of its incomplete frame here; a charge that would go
//! over the budget fails, and that connection (the newest one to grow past it) is closed,
//! while connections already holding their share keep it.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
}

/// A charge would exceed the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {limit}-byte budget for incomplete frames across all connections is spent")]
pub struct BudgetExceeded {
    pub limit: usize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> BufferBudget {
        BufferBudget { limit, used: AtomicUsize::new(0) }
    }

    /// Bytes currently charged by all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A charge holding nothing yet; released when dropped.
    pub fn charge(&self) -> Charge<'_> {
        Charge { budget: self, held: 0 }
    }
}

/// One connection's share of the budget.
#[derive(Debug)]
pub struct Charge<'a> {
    budget: &'a BufferBudget,
    held: usize,
}

impl Charge<'_> {
    /// Makes this connection hold exactly `bytes`. Shrinking always succeeds; growing fails
    /// (holding what it held before) when the budget cannot cover it.
    pub fn hold(&mut self, bytes: usize) -> Result<(), BudgetExceeded> {
        if bytes == self.held {
            return Ok(());
        }
        let used = if bytes < self.held {
            self.budget.used.fetch_sub(self.held - bytes, Ordering::Relaxed) - (self.held - bytes)
        } else {
            let (delta, limit) = (bytes - self.held, self.budget.limit);
            self.budget
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    used.checked_add(delta).filter(|&total| total <= limit)
                })
                .map_err(|_| BudgetExceeded { limit })?
                + delta
        };
        self.held = bytes;
        crate::metrics::global().incomplete_frame_bytes.set(used as i64);
        Ok(())
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        let _ = self.hold(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_share_the_budget_and_are_released() {
        let budget = BufferBudget::new(100);
        let mut a = budget.charge();
        let mut b = budget.charge();
        a.hold(60).unwrap();
        assert_eq!(b.hold(50), Err(BudgetExceeded { limit: 100 }));
        b.hold(40).unwrap();
        assert_eq!(budget.used(), 100);
        a.hold(10).unwrap();
        assert_eq!(budget.used(), 50);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
