//! Retry gates on Redis: each shard keeps every gate (`P:gates`, its line below) and its own
//! share of a `limit`'s rate; the `deliver` script applies them (see `scripts::GATES`,
//! docs/retries.md#gates).

use failed_tasks_domain::gate::MAX_ACTIVE_GATES;
use failed_tasks_domain::{
    ClientId, ErrorCategory, ErrorCode, ErrorSignature, GateCreator, GateId, GateMode, GateReason,
    GateScope, GateStatus, PerSecond, RetryGate, TaskType, Timestamp,
};
use failed_tasks_store::{CreateGate, StoreError};
use fred::types::Value;

use crate::scripts::Scripts;
use crate::shard::Shard;
use crate::store::RedisStore;

/// A gate as its line: `mode \t rate \t until ms \t task type \t category \t code \t client
/// \t signature \t since ms \t by \t reason` (empty fields: none). No field but the reason
/// can hold a tab (the domain's values have no control characters, nor has the reason).
pub(crate) fn line_of(g: &RetryGate) -> String {
    let s = &g.scope;
    let opt = |v: Option<&str>| v.unwrap_or("").to_owned();
    [
        g.mode.as_str().to_owned(),
        g.mode
            .per_second()
            .map(|r| r.to_string())
            .unwrap_or_default(),
        g.until
            .map(|u| u.unix_millis().to_string())
            .unwrap_or_default(),
        opt(s.task_type.as_ref().map(TaskType::as_str)),
        opt(s.error_category.map(ErrorCategory::as_str)),
        opt(s.error_code.as_ref().map(ErrorCode::as_str)),
        opt(s.client_id.as_ref().map(ClientId::as_str)),
        opt(s.signature.as_ref().map(ErrorSignature::as_str)),
        g.since.unix_millis().to_string(),
        g.created_by.as_str().to_owned(),
        g.reason.as_str().to_owned(),
    ]
    .join("\t")
}

/// The gate of `id` from its line; `None` for a line this version cannot read.
pub(crate) fn gate_of(id: &str, line: &str) -> Option<RetryGate> {
    let f: Vec<&str> = line.splitn(11, '\t').collect();
    let [mode, rate, until, task_type, category, code, client, sig, since, by, reason] =
        f.as_slice()
    else {
        return None;
    };
    fn opt<T, E>(v: &str, parse: impl Fn(&str) -> Result<T, E>) -> Option<Option<T>> {
        if v.is_empty() {
            Some(None)
        } else {
            parse(v).ok().map(Some)
        }
    }
    let mode = match *mode {
        "hold" => GateMode::Hold,
        "limit" => GateMode::Limit(PerSecond::new(rate.parse().ok()?).ok()?),
        _ => return None,
    };
    let ms = |v: &str| {
        v.parse::<i64>()
            .ok()
            .and_then(|m| Timestamp::from_unix_millis(m).ok())
            .ok_or(())
    };
    Some(RetryGate {
        id: GateId::parse(id).ok()?,
        scope: GateScope {
            task_type: opt(task_type, |v| TaskType::parse(v))?,
            error_category: opt(category, ErrorCategory::parse)?,
            error_code: opt(code, |v| ErrorCode::parse(v))?,
            client_id: opt(client, |v| ClientId::parse(v))?,
            signature: opt(sig, ErrorSignature::parse)?,
        },
        mode,
        reason: GateReason::parse(reason).ok()?,
        created_by: GateCreator::parse(by).ok()?,
        since: ms(since).ok()?,
        until: opt(until, ms)?,
    })
}

impl Shard {
    async fn create_gate(&self, gate: &RetryGate, now: Timestamp) -> Result<bool, StoreError> {
        let k = &self.keys;
        let created: i64 = self
            .conn
            .eval(
                &Scripts::get().gate_create,
                vec![k.gates().into()],
                vec![
                    k.prefix().into(),
                    now.unix_millis().into(),
                    (MAX_ACTIVE_GATES as i64).into(),
                    gate.id.as_str().into(),
                    line_of(gate).into(),
                    gate.mode.as_str().into(),
                ],
            )
            .await?;
        Ok(created == 1)
    }

    async fn release_gate(&self, id: &GateId) -> Result<bool, StoreError> {
        let k = &self.keys;
        let released: i64 = self
            .conn
            .eval(
                &Scripts::get().gate_release,
                vec![k.gates().into()],
                vec![k.prefix().into(), id.as_str().into()],
            )
            .await?;
        Ok(released == 1)
    }

    async fn pass_gate(&self, id: &GateId, passes: u32) -> Result<bool, StoreError> {
        let k = &self.keys;
        let done: i64 = self
            .conn
            .eval(
                &Scripts::get().gate_pass,
                vec![k.gates().into()],
                vec![
                    k.prefix().into(),
                    id.as_str().into(),
                    i64::from(passes).into(),
                ],
            )
            .await?;
        Ok(done == 1)
    }

    /// Each gate in force as `(id, line, held)`; with `full` false only those holding
    /// anything, without their line.
    async fn list_gates(
        &self,
        now: Timestamp,
        full: bool,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let k = &self.keys;
        let flat: Vec<Value> = self
            .conn
            .eval(
                &Scripts::get().gate_list,
                vec![k.gates().into()],
                vec![
                    k.prefix().into(),
                    now.unix_millis().into(),
                    if full { "1" } else { "0" }.into(),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 3);
        for part in flat.chunks(3) {
            match part {
                [id, line, held] => out.push((
                    id.as_string().unwrap_or_default(),
                    line.as_string().unwrap_or_default(),
                    held.as_u64().unwrap_or(0),
                )),
                _ => {
                    return Err(StoreError::Internal(
                        "gate_list answered something else than {id, line, held} triples"
                            .to_owned(),
                    ))
                }
            }
        }
        Ok(out)
    }
}

impl RedisStore {
    /// On every shard (each keeps every gate); when one shard has too many, the shards that
    /// took it release it again.
    pub(crate) async fn create_gate_everywhere(
        &self,
        gate: &RetryGate,
        now: Timestamp,
    ) -> Result<CreateGate, StoreError> {
        let all = self.every_shard(|s| s.create_gate(gate, now)).await;
        let mut first_err = None;
        let mut refused = false;
        for r in &all {
            match r {
                Ok(false) => refused = true,
                Err(e) if first_err.is_none() => first_err = Some(e.clone()),
                _ => {}
            }
        }
        if refused || first_err.is_some() {
            // Best effort: a shard that took it gives it back.
            let _ = self.every_shard(|s| s.release_gate(&gate.id)).await;
        }
        match first_err {
            Some(e) => Err(e),
            None if refused => Ok(CreateGate::TooMany),
            None => Ok(CreateGate::Created),
        }
    }

    pub(crate) async fn release_gate_everywhere(&self, id: &GateId) -> Result<bool, StoreError> {
        let mut any = false;
        for r in self.every_shard(|s| s.release_gate(id)).await {
            any |= r?;
        }
        Ok(any)
    }

    /// `ceil(passes / shards)` passes on every shard (each keeps every gate).
    pub(crate) async fn pass_gate_everywhere(
        &self,
        id: &GateId,
        passes: u32,
    ) -> Result<bool, StoreError> {
        let n = u32::try_from(self.shards().readers().len().max(1)).unwrap_or(u32::MAX);
        let each = passes.div_ceil(n);
        let mut any = false;
        for r in self.every_shard(|s| s.pass_gate(id, each)).await {
            any |= r?;
        }
        Ok(any)
    }

    /// The first shard's gates (every shard keeps every gate), each with the held counts
    /// of every shard added up, oldest first. The other shards answer only the gates that
    /// hold something there, so the answer does not grow with shards × gates.
    pub(crate) async fn list_gates_everywhere(
        &self,
        now: Timestamp,
    ) -> Result<Vec<GateStatus>, StoreError> {
        let readers = self.shards().readers();
        let (first, rest) = tokio::join!(
            readers[0].list_gates(now, true),
            futures_util::future::join_all(readers[1..].iter().map(|s| s.list_gates(now, false)))
        );
        let mut merged: std::collections::BTreeMap<String, GateStatus> = Default::default();
        for (id, line, held) in first? {
            match gate_of(&id, &line) {
                Some(gate) => {
                    merged.insert(id, GateStatus { gate, held });
                }
                None => {
                    tracing::warn!(gate = %id, %line, "skipping a gate this version cannot read")
                }
            }
        }
        for r in rest {
            for (id, _, held) in r? {
                if let Some(status) = merged.get_mut(&id) {
                    status.held += held;
                }
            }
        }
        Ok(merged.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let t = |ms| Timestamp::from_unix_millis(ms).unwrap();
        for gate in [
            RetryGate {
                id: GateId::parse("g1").unwrap(),
                scope: GateScope::default(),
                mode: GateMode::Hold,
                reason: GateReason::parse("provider outage\u{a0}(β)").unwrap(),
                created_by: GateCreator::Operator,
                since: t(1_000),
                until: None,
            },
            RetryGate {
                id: GateId::parse("g2").unwrap(),
                scope: GateScope {
                    task_type: Some(TaskType::parse("embedding").unwrap()),
                    error_category: Some(ErrorCategory::ServiceTimeout),
                    error_code: Some(ErrorCode::parse("TIMEOUT_ERROR").unwrap()),
                    client_id: Some(ClientId::parse("c 1").unwrap()),
                    signature: Some(ErrorSignature::parse("0123456789abcdef").unwrap()),
                },
                mode: GateMode::Limit(PerSecond::new(0.5).unwrap()),
                reason: GateReason::parse("ramp").unwrap(),
                created_by: GateCreator::Breaker,
                since: t(2_000),
                until: Some(t(3_000)),
            },
        ] {
            let line = line_of(&gate);
            assert_eq!(gate_of(gate.id.as_str(), &line), Some(gate), "{line}");
        }
        assert_eq!(gate_of("g1", "hold\t\t"), None);
    }
}
