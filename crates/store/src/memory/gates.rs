//! Retry gates on the memory store: the active gates with their token buckets and the
//! retries each one parks, under the store's lock (the same rules as the Redis `deliver`
//! script, docs/retries.md#gates).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use failed_tasks_domain::gate::MAX_ACTIVE_GATES;
use failed_tasks_domain::{
    ErrorSignature, FailedTask, GateId, GateMode, GateStatus, GateSubject, RetryGate, TaskId,
    Timestamp,
};

use super::indexes::Indexes;
use crate::CreateGate;

/// One active gate.
#[derive(Debug)]
pub(super) struct ActiveGate {
    gate: RetryGate,
    /// A `limit` gate's tokens (deliveries it allows now) and when they were counted (ms).
    tokens: f64,
    counted_ms: i64,
    /// The retries it parks, by due time.
    held: BTreeSet<(i64, TaskId)>,
    /// Retries a `hold` gate still lets through (the breaker's canaries).
    passes: u32,
}

impl ActiveGate {
    /// Add the tokens earned since they were last counted: `rate` a second, at most one
    /// second's worth (at least one token).
    fn refill(&mut self, now_ms: i64) {
        if let Some(rate) = self.gate.mode.per_second() {
            let earned = (now_ms - self.counted_ms).max(0) as f64 / 1000.0 * rate;
            self.tokens = (self.tokens + earned).min(rate.max(1.0));
            self.counted_ms = self.counted_ms.max(now_ms);
        }
    }
}

/// The gates and where each parked retry is.
#[derive(Debug, Default)]
pub(super) struct Gates {
    active: BTreeMap<GateId, ActiveGate>,
    parked_of: HashMap<TaskId, GateId>,
}

impl Gates {
    /// Whether any gate is active.
    pub(super) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Take `id` (due at `at`) out of the gate that parks it, if one does.
    pub(super) fn unpark(&mut self, id: &TaskId, at: i64) {
        if let Some(g) = self.parked_of.remove(id) {
            if let Some(gate) = self.active.get_mut(&g) {
                gate.held.remove(&(at, id.clone()));
            }
        }
    }

    /// The gate that stops a retry of `task` now, or `None` after charging one token of
    /// every `limit` gate it passes: a `hold` first (the oldest), then a `limit` whose rate
    /// is spent (the oldest).
    fn decide(&mut self, task: &FailedTask, signature: &str) -> Option<GateId> {
        let subject = GateSubject {
            task_type: task.task_type().as_str(),
            error_category: task.error_category(),
            error_code: task.error_code().as_str(),
            client_id: task.client_id().as_str(),
            signature,
        };
        let mut spent = None;
        let mut charge = Vec::new();
        for (id, g) in &self.active {
            if !g.gate.scope.matches(&subject) {
                continue;
            }
            match g.gate.mode {
                GateMode::Hold if g.passes > 0 => charge.push(id.clone()),
                GateMode::Hold => return Some(id.clone()),
                GateMode::Limit(_) if g.tokens < 1.0 => {
                    spent.get_or_insert_with(|| id.clone());
                }
                GateMode::Limit(_) => charge.push(id.clone()),
            }
        }
        if spent.is_some() {
            return spent;
        }
        for id in charge {
            if let Some(g) = self.active.get_mut(&id) {
                match g.gate.mode {
                    GateMode::Hold => g.passes -= 1,
                    GateMode::Limit(_) => g.tokens -= 1.0,
                }
            }
        }
        None
    }

    fn needs_signature(&self) -> bool {
        self.active
            .values()
            .any(|g| g.gate.scope.signature.is_some())
    }

    fn park(&mut self, gate: &GateId, at: i64, id: TaskId) {
        if let Some(g) = self.active.get_mut(gate) {
            g.held.insert((at, id.clone()));
            self.parked_of.insert(id, gate.clone());
        }
    }
}

/// What a gated scheduler step did.
#[derive(Debug, Default)]
pub(super) struct Step {
    pub(super) delivered: Vec<(i64, TaskId)>,
    pub(super) dropped: u64,
    pub(super) held: u64,
}

impl Indexes {
    pub(super) fn create_gate(&mut self, gate: &RetryGate, now: Timestamp) -> CreateGate {
        if self.gates.active.len() >= MAX_ACTIVE_GATES {
            self.lapse_gates(now);
            if self.gates.active.len() >= MAX_ACTIVE_GATES {
                return CreateGate::TooMany;
            }
        }
        self.gates.active.insert(
            gate.id.clone(),
            ActiveGate {
                gate: gate.clone(),
                tokens: 0.0,
                counted_ms: now.unix_millis(),
                held: BTreeSet::new(),
                passes: 0,
            },
        );
        CreateGate::Created
    }

    /// Let `passes` retries through a `hold` gate (replacing what it had).
    pub(super) fn pass_gate(&mut self, id: &GateId, passes: u32) -> bool {
        match self.gates.active.get_mut(id) {
            Some(g) if g.gate.mode == GateMode::Hold => {
                g.passes = passes;
                true
            }
            _ => false,
        }
    }

    /// Release a gate: its parked retries go back to the due set.
    pub(super) fn release_gate(&mut self, id: &GateId) -> bool {
        let Some(gate) = self.gates.active.remove(id) else {
            return false;
        };
        for (at, task) in gate.held {
            self.gates.parked_of.remove(&task);
            self.due.insert((at, task));
        }
        true
    }

    /// Release the gates lapsed at `now`.
    pub(super) fn lapse_gates(&mut self, now: Timestamp) {
        let lapsed: Vec<GateId> = self
            .gates
            .active
            .values()
            .filter(|g| g.gate.lapsed(now))
            .map(|g| g.gate.id.clone())
            .collect();
        for id in lapsed {
            self.release_gate(&id);
        }
    }

    pub(super) fn list_gates(&self, now: Timestamp) -> Vec<GateStatus> {
        self.gates
            .active
            .values()
            .filter(|g| !g.gate.lapsed(now))
            .map(|g| GateStatus {
                gate: g.gate.clone(),
                held: g.held.len() as u64,
            })
            .collect()
    }

    /// One scheduler step under gates: first the retries `limit` gates parked while their
    /// rate was spent (as many as their tokens allow) and those `hold` gates with passes
    /// parked (as many as their passes), then the due set; each either
    /// delivered (taken out of `due_of`) or parked again. At most `max` retries are looked
    /// at.
    pub(super) fn take_due_gated(&mut self, now: Timestamp, max: usize) -> Step {
        let now_ms = now.unix_millis();
        for g in self.gates.active.values_mut() {
            g.refill(now_ms);
        }
        let with_sig = self.gates.needs_signature();
        let mut step = Step::default();
        let mut looked = 0usize;
        let waiting: Vec<(GateId, usize)> = self
            .gates
            .active
            .iter()
            .filter(|(_, g)| !g.held.is_empty())
            .filter_map(|(id, g)| {
                let n = match g.gate.mode {
                    GateMode::Hold => g.passes as usize,
                    GateMode::Limit(_) => g.tokens as usize,
                };
                (n > 0).then(|| (id.clone(), n))
            })
            .collect();
        for (gid, n) in waiting {
            for _ in 0..n {
                if looked >= max {
                    break;
                }
                let Some(gate) = self.gates.active.get_mut(&gid) else {
                    break;
                };
                let Some((at, id)) = gate.held.pop_first() else {
                    break;
                };
                self.gates.parked_of.remove(&id);
                looked += 1;
                self.consider(at, id, with_sig, &mut step);
            }
        }
        while looked < max {
            let Some((at, id)) = self.due.first().cloned() else {
                break;
            };
            if at > now_ms {
                break;
            }
            self.due.remove(&(at, id.clone()));
            looked += 1;
            self.consider(at, id, with_sig, &mut step);
        }
        step
    }

    fn consider(&mut self, at: i64, id: TaskId, with_sig: bool, step: &mut Step) {
        let scheduled = matches!(
            self.sched.get(&id),
            Some(super::retries::Sched::Scheduled(_))
        );
        let Some(task) = self.by_id.get(&id).filter(|_| scheduled) else {
            self.due_of.remove(&id);
            step.dropped += 1;
            return;
        };
        let sig = if with_sig {
            ErrorSignature::of_task(task).as_str().to_owned()
        } else {
            String::new()
        };
        match self.gates.decide(task, &sig) {
            Some(gate) => {
                self.gates.park(&gate, at, id);
                step.held += 1;
            }
            None => {
                self.due_of.remove(&id);
                step.delivered.push((at, id));
            }
        }
    }
}
