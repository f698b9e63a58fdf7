//! Verdicts of the authentication check (`--auth`) coming back to the loop: each goes to its
//! connection, which routes its held request on its next drive.

use std::time::Instant;

use super::{Held, Reactor};
use crate::auth::Gate;

impl Reactor {
    /// Requests under protected prefixes are checked by `gate` (whose mailbox wakes this loop's
    /// poller).
    pub fn set_auth(&mut self, gate: Gate) {
        self.auth = Some(gate);
    }

    /// The gate, for the threads that drive lent connections.
    pub fn auth_gate(&self) -> Option<Gate> {
        self.auth.clone()
    }

    /// Verdicts that came back: a connection here is driven (or queued for a thread), one lent
    /// out gets its verdict when it is handed back, one closed since is forgotten.
    pub(super) fn auth_verdicts(&mut self, now: Instant) {
        let Some(gate) = &self.auth else {
            return;
        };
        for v in gate.take_verdicts() {
            match self.conns.get_mut(v.key) {
                Some(Held::Here(c)) if c.sched.generation == v.generation => {
                    c.auth_verdict(v.ok);
                    self.drive(v.key, now);
                }
                #[cfg(feature = "models")]
                Some(Held::Away { generation, .. }) if *generation == v.generation => {
                    self.verdicts_away.push(v);
                }
                _ => {}
            }
        }
    }

    /// The verdict kept for a connection that was lent out when it came.
    #[cfg(feature = "models")]
    pub(super) fn verdict_kept(&mut self, key: usize, generation: u32) -> Option<bool> {
        let i = self
            .verdicts_away
            .iter()
            .position(|v| v.key == key && v.generation == generation)?;
        Some(self.verdicts_away.swap_remove(i).ok)
    }
}
