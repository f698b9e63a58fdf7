//! The server models (`--model`): the same reactor, connections and protocol core, on different
//! thread layouts. `single` is [`Reactor::run`](crate::reactor::Reactor::run) on the calling thread; the others are here.

#[cfg(feature = "models")]
pub mod pooled;
#[cfg(feature = "models")]
pub mod proactor;
#[cfg(any(feature = "models", feature = "auth"))]
pub mod queue;

#[cfg(feature = "models")]
use std::io;

#[cfg(feature = "models")]
use crate::reactor::Reactor;

/// `sharded`: one independent loop per thread, each with its own poller, slab and listener.
/// The kernel spreads connections over the listeners (SO_REUSEPORT); the first loop owns the
/// signals and stops the others with it.
#[cfg(feature = "models")]
pub fn sharded(mut reactors: Vec<Reactor>) -> io::Result<()> {
    let first = reactors.remove(0);
    std::thread::scope(|s| {
        let threads = reactors
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                std::thread::Builder::new()
                    .name(format!("shard-{}", i + 1))
                    .spawn_scoped(s, move || r.run())
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut first = first;
        let mut result = first.run();
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                result = result.and(Err(e));
            }
        }
        result
    })
}
