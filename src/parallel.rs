//! Work split over a few threads: what the bulk paths (import, snapshot load) run on
//! all cores.

/// Runs `f` on every part, each on a thread of its own but the first (on this one);
/// returns the results in order.
pub(crate) fn run<P: Send, R: Send>(parts: Vec<P>, f: impl Fn(P) -> R + Sync) -> Vec<R> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let others: Vec<_> = parts.map(|p| s.spawn(|| f(p))).collect();
        let mut out = vec![f(first)];
        // A panic in a part is a bug: carried to the caller as it would be inline.
        out.extend(others.into_iter().map(|h| match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }));
        out
    })
}

/// `items` dealt into at most `parts` owned runs of consecutive items.
pub(crate) fn split<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let per = items.len().div_ceil(parts.max(1)).max(1);
    let mut it = items.into_iter();
    let mut out = Vec::new();
    loop {
        let part: Vec<T> = it.by_ref().take(per).collect();
        if part.is_empty() {
            return out;
        }
        out.push(part);
    }
}

/// How many threads a bulk job of `n` items is worth: all cores from a few thousand
/// items, the caller's alone below.
pub(crate) fn threads_for(n: usize) -> usize {
    if n < 8192 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// `f` of every item, in order: on all cores when the items are many (see
/// [`threads_for`]), each core a run of consecutive items; on the caller's thread
/// otherwise.
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len());
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    run(items.chunks(per).collect(), |part| {
        part.iter().map(&f).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}
