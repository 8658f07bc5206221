//! Automatic compaction: when the write log has outgrown the last snapshot, fold it
//! into a new one (Redis's `auto-aof-rewrite-percentage` and `-min-size`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Engine;
use crate::error::Error;
use crate::error::StorageError;
use crate::persist::snapshot::SnapshotStats;

/// When a durable engine's log is due for compaction (see
/// [`Engine::compact_if_due`] and [`Compactor`]): once it is at least
/// `min_log_bytes` long and at least `growth_percent` percent of the last snapshot's
/// size. The defaults are Redis's: 100% and 64 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoCompact {
    /// How large the log may grow, in percent of the snapshot's size, before it is
    /// folded into a new snapshot; 0 turns automatic compaction off.
    pub growth_percent: u32,
    /// No compaction while the log is shorter than this, whatever the ratio (a small
    /// engine would otherwise compact at every few writes).
    pub min_log_bytes: u64,
}

impl Default for AutoCompact {
    fn default() -> Self {
        AutoCompact {
            growth_percent: 100,
            min_log_bytes: 64 << 20,
        }
    }
}

impl AutoCompact {
    /// Whether a log of `log` bytes beside a snapshot of `snapshot` bytes is due.
    #[must_use]
    pub fn due(&self, log: u64, snapshot: u64) -> bool {
        self.growth_percent != 0
            && log >= self.min_log_bytes
            && u128::from(log) * 100 >= u128::from(snapshot) * u128::from(self.growth_percent)
    }
}

impl Engine {
    /// Whether the log is due for compaction under the builder's [`AutoCompact`]
    /// policy (never for an engine without a data directory).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the data directory cannot be read.
    pub fn compaction_due(&self) -> Result<bool, Error> {
        let Some(dir) = self.data_dir.get() else {
            return Ok(false);
        };
        let log = self.log_bytes()?;
        // Cheap test first: most calls find the log below the minimum.
        if !self.auto_compact.due(log, 0) {
            return Ok(false);
        }
        Ok(self.auto_compact.due(log, dir.snapshot_bytes()?))
    }

    /// Compacts (see [`compact`](Self::compact)) if [`compaction_due`](Self::compaction_due);
    /// returns what the new snapshot holds, or `None` when it was not due.
    ///
    /// # Errors
    ///
    /// As [`compact`](Self::compact).
    pub fn compact_if_due(&self) -> Result<Option<SnapshotStats>, Error> {
        if self.compaction_due()? {
            self.compact().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A thread that runs [`Engine::compact_if_due`] every `interval` for as long as it
/// and the engine live: the engine's log never grows past its [`AutoCompact`]
/// policy by more than an interval's writes (and a compaction's length). A failed
/// compaction is kept (see [`last_error`](Self::last_error)) and tried again after
/// ten intervals, so a full disk is not retried in a loop. Dropping it stops the
/// thread (after a compaction in progress ends). The thread holds the engine only
/// while it compacts; a host that drops its last reference meanwhile has the engine
/// (and its directory's lock) released when that compaction ends, so drop the
/// compactor first to reopen the directory at once.
///
/// ```
/// use std::sync::Arc;
/// use relcount::{AutoCompact, Compactor, Engine, SyncPolicy};
///
/// let dir = std::env::temp_dir().join(format!("relcount-doc-compactor-{}", std::process::id()));
/// let engine = Arc::new(
///     Engine::builder()
///         .auto_compact(AutoCompact { growth_percent: 100, min_log_bytes: 1 << 20 })
///         .open(&dir, SyncPolicy::EverySec)?,
/// );
/// let compactor = Compactor::start(&engine, std::time::Duration::from_secs(1))?;
/// // ... writes ...
/// drop(compactor);
/// # drop(engine);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), relcount::Error>(())
/// ```
#[derive(Debug)]
pub struct Compactor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// Wakes the thread early to stop.
    wake: Condvar,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    compactions: u64,
    last_error: Option<Error>,
}

impl Compactor {
    /// Starts the thread for `engine` (held weakly: dropping the last other
    /// reference to the engine ends the thread too).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the thread cannot be started.
    pub fn start(engine: &Arc<Engine>, interval: Duration) -> Result<Compactor, Error> {
        let shared = Arc::new(Shared::default());
        let (weak, inner) = (Arc::downgrade(engine), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("relcount-compact".into())
            .spawn(move || run(&weak, &inner, interval))
            .map_err(|e| {
                Error::Storage(StorageError::io_doing("starting the compaction thread", e))
            })?;
        Ok(Compactor {
            shared,
            thread: Some(thread),
        })
    }

    /// Compactions this thread ran.
    #[must_use]
    pub fn compactions(&self) -> u64 {
        self.shared.lock().compactions
    }

    /// Why the last compaction tried failed, if it did (cleared by one that works).
    #[must_use]
    pub fn last_error(&self) -> Option<Error> {
        self.shared.lock().last_error.clone()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _state = self.shared.lock();
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(engine: &Weak<Engine>, shared: &Shared, interval: Duration) {
    let mut wait = interval;
    loop {
        {
            let state = shared.lock();
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let (_state, _) = shared
                .wake
                .wait_timeout_while(state, wait, |_| !shared.stop.load(Ordering::Acquire))
                .unwrap_or_else(|e| e.into_inner());
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let done = engine.compact_if_due();
        drop(engine);
        let mut state = shared.lock();
        wait = match done {
            Ok(ran) => {
                state.compactions += u64::from(ran.is_some());
                state.last_error = None;
                interval
            }
            Err(e) => {
                state.last_error = Some(e);
                interval.saturating_mul(10)
            }
        };
    }
}
