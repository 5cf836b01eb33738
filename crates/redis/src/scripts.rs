//! The Lua scripts that keep records and indexes consistent (see `docs/redis-layout.md`).
//!
//! Every script finds a record's old index entries, group and minute counters from its
//! header line (see [`failed_tasks_store::stored`]), so an upsert that changes the fail time, category,
//! task type, client, error code or signature moves the task in every index, group and
//! counter in the same atomic step. Every script is bounded: a fixed number of commands per
//! task (a group's re-ranking reads one member with `ZRANGE … LIMIT 0 1`), never a loop
//! over a set. Keys built inside a
//! script share the prefix's hash tag, so they live in the slot of the declared keys.
//!
//! Every call declares one more key after a script's own KEYS, the slot's guard
//! (`Keys::slot_guard`, never written; see `Conn::eval`): scripts read KEYS by position and
//! ignore it.

use std::sync::OnceLock;

use crate::conn::{Script, LATE};

/// Shared helpers: parse a header, bump counters, remove a record from (and add one to) its
/// index entries, minute counters and failure group.
///
/// Header fields are named, never numbered: [`layout_prelude`] defines `F_<FIELD>` (a field's
/// index), `KNOWN` (each version's field count), `CURRENT` (the version written now) and
/// `MS_DIGITS` from `failed_tasks_store::stored`, which is the one definition of the record.
/// Fields are only ever appended, so a header carries a field exactly when it has at least
/// that many fields: a `v1` header names only the five indexes; `v2` adds the signature, and
/// only `v2` and later records are counted and grouped, so `unrecord` undoes exactly what
/// `put` did; `v3` adds the retry fields (a `v3` or later record is in a retry-state index
/// and, when scheduled and not yet delivered, in the due set); `v4` adds the start time,
/// processed files and the due time in RFC 3339, and its body is the error message instead
/// of the task's JSON.
const HELPERS: &str = r#"
local function header(v)
  local nl = string.find(v, '\n', 1, true)
  if not nl then return nil end
  local h = string.sub(v, 1, nl - 1)
  local out, pos = {}, 1
  while true do
    local tab = string.find(h, '\t', pos, true)
    if not tab then
      table.insert(out, string.sub(h, pos))
      break
    end
    table.insert(out, string.sub(h, pos, tab - 1))
    pos = tab + 1
  end
  if KNOWN[out[F_VERSION]] == #out then return out end
  return nil
end
-- A stored value's header line and JSON.
local function split(v)
  local nl = string.find(v, '\n', 1, true)
  return string.sub(v, 1, nl - 1), string.sub(v, nl + 1)
end
-- Every v3 record's JSON ends with `,"NextRetryAt":null}` or `,"NextRetryAt":"<RFC 3339>"}`
-- (at most 42 bytes). A bare `,"` cannot occur inside a JSON string (quotes are escaped), so
-- the first match near the end is the field.
local function tail_pos(json)
  return string.find(json, ',"NextRetryAt":', math.max(1, #json - 64), true)
end
-- The NextRetryAt value as stored: `null` or a quoted time.
local function tail_value(json)
  return string.sub(json, tail_pos(json) + 15, #json - 1)
end
local function with_tail(json, value)
  return string.sub(json, 1, tail_pos(json) - 1) .. ',"NextRetryAt":' .. value .. '}'
end
local function join(f)
  return table.concat(f, '\t')
end
-- Whether a header carries the retry fields (STATE to RUN_BY, from v3 on).
local function retrying(f)
  return #f >= F_RUN_BY
end
-- The scheduled retry's due time (RFC 3339) a record names: a v4 header's field, a v3
-- record's JSON tail; '' when none.
local function due_at(f, body)
  if #f >= F_DUE_AT then return f[F_DUE_AT] end
  local v = tail_value(body)
  if v == 'null' then return '' end
  return string.sub(v, 2, #v - 1)
end
-- Set the due time (RFC 3339, '' for none) of a record: in a v4 header (`f`, joined by the
-- caller), or a v3 record's JSON tail. Returns the body to store after the header.
local function with_due(f, body, at)
  if #f >= F_DUE_AT then
    f[F_DUE_AT] = at
    return body
  end
  if at == '' then return with_tail(body, 'null') end
  return with_tail(body, '"' .. at .. '"')
end
-- The retry-state index of a header's state letter: s scheduled, f final, n/c none.
local function retry_index(prefix, s)
  local name = 'none'
  if s == 's' then name = 'scheduled' elseif s == 'f' then name = 'final' end
  return prefix .. ':idx:retry:' .. name
end
-- A retry a gate parks (docs/retries.md#gates) is in the gate's held set P:retry:held:GID
-- (score: its due time) and named in P:retry:parked (task id -> gate id); it is still
-- waiting (not delivered). Its due time, or false when it is not parked:
local function parked_score(prefix, id)
  local g = redis.call('HGET', prefix .. ':retry:parked', id)
  if not g then return false end
  return redis.call('ZSCORE', prefix .. ':retry:held:' .. g, id) or false
end
-- Take a retry out of the gate that parks it, if one does.
local function unpark(prefix, id)
  local g = redis.call('HGET', prefix .. ':retry:parked', id)
  if not g then return end
  redis.call('ZREM', prefix .. ':retry:held:' .. g, id)
  redis.call('HDEL', prefix .. ':retry:parked', id)
end
local function bump(key, field, d)
  local n = redis.call('HINCRBY', key, field, d)
  if n <= 0 then redis.call('HDEL', key, field) end
  return n
end
-- Counter changes and group re-rankings are collected in `acc` and applied once per
-- distinct field and group when the script ends (`flush`): a batch of tasks in the same
-- minutes and groups costs a few commands, not five per task. The script is atomic, so
-- nobody sees the intermediate state.
local function acc_new()
  return {keys = {}, deltas = {}, expiry = {}, sigs = {}, dirty = {}, tops = {}, zkeys = {}}
end
local function acc_add(acc, key, field, d)
  local per = acc.deltas[key]
  if not per then
    per = {fields = {}, by = {}}
    acc.deltas[key] = per
    table.insert(acc.keys, key)
  end
  if per.by[field] == nil then
    per.by[field] = 0
    table.insert(per.fields, field)
  end
  per.by[field] = per.by[field] + d
end
-- Breakdowns by task type (y), client (l), error code (e) and codebase path (p; a header
-- before v3 has none: such a record is in no codebase breakdown, neither when counted nor
-- when taken away): a sorted set per minute and
-- per hour (P:top:m:{minute}:{d}, P:top:h:{hour}:{d}) of at most TOP_CAP members; a value
-- first seen when its set is full counts in its hour hash's field {minute}:u:{d} or h:u:{d}
-- (untracked) instead. A decrement lowers the member while it is there, the untracked field
-- otherwise (failed_tasks_domain::stats::TrackedCounts is the same rule). Collected per set and
-- member like the counters, applied by `flush_tops`.
local TOP_CAP = {TOP_CAP}
local function acc_top(acc, hash, zkey, ufield, name, d)
  local per = acc.tops[zkey]
  if not per then
    per = {hash = hash, ufield = ufield, names = {}, by = {}}
    acc.tops[zkey] = per
    table.insert(acc.zkeys, zkey)
  end
  if per.by[name] == nil then
    per.by[name] = 0
    table.insert(per.names, name)
  end
  per.by[name] = per.by[name] + d
end
-- Per set: its size read once and kept up to date here, so that a value costs one command
-- (`ZINCRBY`; `ZADD XX INCR` once the set is full, which leaves out a value it lacks), and the
-- untracked count of the set's bucket one `HINCRBY` for the whole batch. A tracked value's
-- score is at least 1, so `ZINCRBY` answering `d` means the value was new.
local function flush_tops(acc)
  for _, z in ipairs(acc.zkeys) do
    local per = acc.tops[z]
    local card = redis.call('ZCARD', z)
    local untracked = 0
    for _, name in ipairs(per.names) do
      local d = per.by[name]
      if d > 0 then
        if card < TOP_CAP then
          if tonumber(redis.call('ZINCRBY', z, d, name)) == d then card = card + 1 end
        elseif not redis.call('ZADD', z, 'XX', 'INCR', d, name) then
          untracked = untracked + d
        end
      elseif d < 0 then
        -- Taken off the value (an absent one starts at 0); what its count does not cover
        -- comes off the untracked count.
        local n = tonumber(redis.call('ZINCRBY', z, d, name))
        if n <= 0 then
          redis.call('ZREM', z, name)
          if n - d > 0 then card = card - 1 end
          untracked = untracked + n
        end
      end
    end
    if untracked ~= 0 then bump(per.hash, per.ufield, untracked) end
  end
end
local function count(acc, prefix, f, d)
  local minute = math.floor(tonumber(string.sub(f[F_MEMBER], 1, MS_DIGITS)) / 60000)
  local hour = string.format('%d', math.floor(minute / 60))
  local k = prefix .. ':cnt:' .. hour
  local m = string.format('%d', minute) .. ':'
  acc_add(acc, k, m .. 't', d)
  acc_add(acc, k, m .. 'c:' .. f[F_CATEGORY], d)
  local mz = prefix .. ':top:m:' .. string.format('%d', minute) .. ':'
  local hz = prefix .. ':top:h:' .. hour .. ':'
  local dims = {{'y', f[F_TASK_TYPE]}, {'l', f[F_CLIENT_ID]}, {'e', f[F_ERROR_CODE]}}
  if #f >= F_CODEBASE_PATH then table.insert(dims, {'p', f[F_CODEBASE_PATH]}) end
  for _, dv in ipairs(dims) do
    acc_top(acc, k, mz .. dv[1], m .. 'u:' .. dv[1], dv[2], d)
    acc_top(acc, k, hz .. dv[1], 'h:u:' .. dv[1], dv[2], d)
  end
  return k
end
local function dirty(acc, sig)
  if not acc.dirty[sig] then
    acc.dirty[sig] = true
    table.insert(acc.sigs, sig)
  end
end
local function rank(prefix, sig)
  local g = prefix .. ':grp:' .. sig
  local newest = redis.call('ZRANGE', prefix .. ':idx:sig:' .. sig, '+', '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
  local was = redis.call('HGET', g, 'ord')
  local want = false
  if newest then want = string.sub(newest, 1, MS_DIGITS) .. ':' .. sig end
  if was == want then return end
  if was then redis.call('ZREM', prefix .. ':groups', was) end
  if want then
    redis.call('ZADD', prefix .. ':groups', 0, want)
    redis.call('HSET', g, 'ord', want)
  else
    redis.call('DEL', g)
  end
end
-- Take a record (by its header) out of its indexes, group, due set and (unless `uncount` is
-- false: a resolve keeps the failure counted) its minute's counters. Its failed files
-- (`P:files:ID`) leave with it: every script that takes a record out, or upserts one, comes
-- through here.
local function unrecord(acc, prefix, f, uncount)
  local m = f[F_MEMBER]
  if redis.call('DEL', prefix .. ':files:' .. string.sub(m, MS_DIGITS + 2)) == 1 then
    redis.call('HDEL', prefix .. ':retry:files', string.sub(m, MS_DIGITS + 2))
  end
  redis.call('ZREM', prefix .. ':idx:all', m)
  for _, ix in ipairs(FIELD_INDEXES) do
    if #f >= ix[2] then redis.call('ZREM', prefix .. ':idx:' .. ix[1] .. ':' .. f[ix[2]], m) end
  end
  if #f < F_SIGNATURE then return end
  if retrying(f) then
    redis.call('ZREM', retry_index(prefix, f[F_STATE]), m)
    local id = string.sub(m, MS_DIGITS + 2)
    if redis.call('ZREM', prefix .. ':retry:due', id) == 0 and f[F_STATE] == 's' then
      unpark(prefix, id)
    end
  end
  local sig = f[F_SIGNATURE]
  redis.call('ZREM', prefix .. ':idx:sig:' .. sig, m)
  local g = prefix .. ':grp:' .. sig
  if bump(g, 'cl:' .. f[F_CLIENT_ID], -1) == 0 then bump(g, 'ncl', -1) end
  dirty(acc, sig)
  if uncount ~= false then count(acc, prefix, f, -1) end
end
-- Make `key` expire at `at` unless it expires later already (no expiry counts as sooner):
-- one read when it does, as it mostly does.
local function expire_by(key, at)
  if redis.call('PEXPIRETIME', key) < at then redis.call('PEXPIREAT', key, at) end
end
local function flush(acc, prefix)
  flush_tops(acc)
  for _, k in ipairs(acc.keys) do
    local per = acc.deltas[k]
    for _, field in ipairs(per.fields) do
      local d = per.by[field]
      if d ~= 0 then bump(k, field, d) end
    end
  end
  for _, k in ipairs(acc.keys) do
    local at = acc.expiry[k]
    if at then expire_by(k, at) end
  end
  for _, z in ipairs(acc.zkeys) do
    local at = acc.expiry[acc.tops[z].hash]
    if at then expire_by(z, at) end
  end
  for _, sig in ipairs(acc.sigs) do rank(prefix, sig) end
end
-- Whether a value to store carries a v4 header; every script checks all its values with
-- this before its first write, so a bad one cannot leave half a batch behind.
local function storable(value)
  local f = header(value)
  return f ~= nil and f[F_VERSION] == CURRENT
end
-- Whether the caller's deadline (ms since the epoch on this server's clock; 0: none) has
-- passed: the caller has stopped waiting and reports a failure, so the script must not write.
local function late(not_after)
  local limit = tonumber(not_after)
  if not limit or limit <= 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > limit
end
-- Upsert one task whose value passed `storable`: its record, indexes, group, counters,
-- retry schedule and history.
local function put(acc, prefix, key, value, ttl, pattern, counters_until)
  local f = header(value)
  local m = f[F_MEMBER]
  local id = string.sub(m, MS_DIGITS + 2)
  local due = prefix .. ':retry:due'
  local old = redis.call('GET', key)
  local created = 1
  local o = nil
  if old then
    created = 0
    o = header(old)
  end
  -- Who scheduled the attempt that failed now (its number is the new RetryCount): the old
  -- record's scheduled retry of that attempt, or, for the same failure reported again, who
  -- the old record said.
  -- (A new task id, the common case, leaves the value as the caller built it.)
  local keep_due = nil
  local same = false
  if o and retrying(o) then
    same = o[F_ATTEMPT] == f[F_ATTEMPT] and string.sub(o[F_MEMBER], 1, MS_DIGITS) == string.sub(m, 1, MS_DIGITS)
    local changed = false
    if o[F_STATE] == 's' and tonumber(o[F_ATTEMPT]) == tonumber(f[F_ATTEMPT]) - 1 then
      f[F_RUN_BY] = o[F_BY]
      changed = true
    elseif same and o[F_RUN_BY] ~= '-' then
      f[F_RUN_BY] = o[F_RUN_BY]
      changed = true
    end
    local _, json = split(value)
    if f[F_STATE] == 's' and o[F_ATTEMPT] == f[F_ATTEMPT] and (o[F_STATE] == 's' or o[F_STATE] == 'c') then
      -- The same failure again: the retry of its next attempt keeps the schedule it has
      -- (waiting, delivered or cancelled), so (TaskId, Attempt) is scheduled once.
      keep_due = redis.call('ZSCORE', due, id) or parked_score(prefix, id) or false
      f[F_STATE] = o[F_STATE]
      f[F_DUE_MS] = o[F_DUE_MS]
      f[F_BY] = o[F_BY]
      local _, obody = split(old)
      json = with_due(f, json, due_at(o, obody))
      changed = true
    end
    if changed then value = join(f) .. '\n' .. json end
  end
  if o then unrecord(acc, prefix, o, true) end
  redis.call('SET', key, value, 'PX', ttl)
  redis.call('ZADD', retry_index(prefix, f[F_STATE]), 0, m)
  if f[F_STATE] == 's' then
    if keep_due == nil then
      redis.call('ZADD', due, f[F_DUE_MS], id)
    elseif keep_due then
      redis.call('ZADD', due, keep_due, id)
    end
  end
  -- History: the record is the newest failed attempt; the ones before it are kept in a list
  -- (newest first, 19 of them), made only once a task fails a second time.
  local hist = prefix .. ':hist:' .. id
  if o and retrying(o) and not same then
    redis.call('LPUSH', hist, string.format('%d', tonumber(o[F_ATTEMPT]) - 1) .. '\t' ..
      string.sub(o[F_MEMBER], 1, MS_DIGITS) .. '\t' .. o[F_ERROR_CODE] .. '\t' .. o[F_CATEGORY] .. '\t' .. o[F_RUN_BY])
    redis.call('LTRIM', hist, 0, 18)
    redis.call('PEXPIRE', hist, ttl)
  elseif o then
    redis.call('PEXPIRE', hist, ttl)
  end
  redis.call('DEL', prefix .. ':resolved:' .. id)
  redis.call('ZADD', prefix .. ':idx:all', 0, m)
  for _, ix in ipairs(FIELD_INDEXES) do
    redis.call('ZADD', prefix .. ':idx:' .. ix[1] .. ':' .. f[ix[2]], 0, m)
  end
  local sig = f[F_SIGNATURE]
  redis.call('ZADD', prefix .. ':idx:sig:' .. sig, 0, m)
  local g = prefix .. ':grp:' .. sig
  if redis.call('HSETNX', g, 'msg', pattern) == 1 then
    redis.call('HSET', g, 'cat', f[F_CATEGORY], 'code', f[F_ERROR_CODE])
  end
  if bump(g, 'cl:' .. f[F_CLIENT_ID], 1) == 1 then bump(g, 'ncl', 1) end
  dirty(acc, sig)
  local k = count(acc, prefix, f, 1)
  local at = tonumber(counters_until)
  if not acc.expiry[k] or acc.expiry[k] < at then acc.expiry[k] = at end
  return created
end
"#;

/// Upsert one task: un-record the old record (named by its header), store the new one, add
/// it to its indexes, its group and its minute's counters.
///
/// KEYS: record, idx:all, idx:category:C, idx:type:T, idx:client:C, idx:code:E, idx:sig:S
/// (declared for routing; the script builds the same names from the header).
/// ARGV: prefix, stored value (with a v4 header), record TTL in ms, the group's normalised
/// message, when the hour's counters may expire (ms since the epoch).
/// Returns 1 when the task id was new, 0 when it replaced a record.
const RECORD: &str = r#"
if not storable(ARGV[2]) then return redis.error_reply('ERR record without a ' .. CURRENT .. ' header') end
local acc = acc_new()
local created = put(acc, ARGV[1], KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
flush(acc, ARGV[1])
return created
"#;

/// Migrate one record to the current layout (`failed-tasks-server migrate`): when the record
/// still holds exactly the value the migration read, upsert its rewritten form as [`RECORD`]
/// does (indexes, group, counters and schedule follow the header, so a `v3` record's stay as
/// they are and a `v1` record joins its group and counters); otherwise a writer got there
/// first and nothing changes.
///
/// KEYS: as [`RECORD`]. ARGV: prefix, the value read, its rewritten form (v4), then
/// [`RECORD`]'s TTL, normalised message and counters' expiry. Returns 1 when migrated, 0 when
/// the record changed since it was read.
const MIGRATE: &str = r#"
if not storable(ARGV[3]) then return redis.error_reply('ERR migrated record without a ' .. CURRENT .. ' header') end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local acc = acc_new()
put(acc, ARGV[1], KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
flush(acc, ARGV[1])
return 1
"#;

/// Upsert a whole batch in one call, all or nothing: [`RECORD`] for each task, in order (a
/// later task with the same id sees the earlier one as its old record).
///
/// Nothing is written when (1) the call starts after `not-after`, the caller's deadline on
/// this server's clock (a call queued behind a paused or busy server, or replayed by the
/// client after a reconnect, once the caller has reported a failure), or (2) any value lacks
/// a v4 header, or (3) the server is over `maxmemory` when the call starts (Redis refuses the
/// first write of a script that has not written yet). Once the first write is done, Redis runs
/// the script to its end, over `maxmemory` if need be: a batch is never cut part-way.
///
/// After the last write it leaves a receipt, `PREFIX:batch:TOKEN` = the flags (`"1011…"`),
/// expiring after a few minutes, in the same atomic step: a caller whose answer was lost
/// (Redis killed after applying the batch, connection dropped) reads it to learn the outcome.
///
/// KEYS: per task, its seven keys in [`RECORD`]'s order (7 x n keys; the guard key
/// `Conn::eval` adds after them is left out of `n`).
/// ARGV: prefix, not-after (ms since the epoch, server clock; 0: none), then per task
/// [`RECORD`]'s four arguments after the prefix, then the receipt's key and its lifetime in
/// ms (2 + 4 x n + 2; the receipt pair is last, so it is found whatever a task's arguments).
/// Returns one flag per task: 1 when its id was new, 0 when it replaced a record.
const RECORD_MANY: &str = r#"
local prefix = ARGV[1]
local n = math.floor(#KEYS / 7)
if late(ARGV[2]) then
  return redis.error_reply('{LATE} batch started after its caller stopped waiting; nothing stored')
end
for t = 0, n - 1 do
  if not storable(ARGV[3 + t * 4]) then
    return redis.error_reply('ERR task ' .. (t + 1) .. ' of the batch has no ' .. CURRENT .. ' header; nothing stored')
  end
end
local acc = acc_new()
local out = {}
for t = 0, n - 1 do
  local a = 3 + t * 4
  out[t + 1] = put(acc, prefix, KEYS[t * 7 + 1], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
flush(acc, prefix)
redis.call('SET', ARGV[#ARGV - 1], table.concat(out), 'PX', ARGV[#ARGV])
return out
"#;

/// Remove one task from its record, indexes, group and counters.
///
/// KEYS: record. ARGV: prefix. Returns 1 when a record was removed.
const REMOVE: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local f = header(old)
local acc = acc_new()
if f then unrecord(acc, ARGV[1], f, true) else
  redis.call('DEL', ARGV[1] .. ':files:' .. string.sub(KEYS[1], #ARGV[1] + 7))
  redis.call('HDEL', ARGV[1] .. ':retry:files', string.sub(KEYS[1], #ARGV[1] + 7))
end
redis.call('DEL', KEYS[1])
redis.call('DEL', ARGV[1] .. ':hist:' .. string.sub(KEYS[1], #ARGV[1] + 7))
flush(acc, ARGV[1])
return 1
"#;

/// Trim the tasks named by members of idx:all (oldest first, chosen by the janitor).
///
/// KEYS: idx:all. ARGV: prefix, member... Returns how many records were removed. A member
/// whose record now has another member (re-recorded since) only loses that stale entry;
/// a member without a record (expired) is dropped from idx:all.
const TRIM: &str = r#"
local acc = acc_new()
local removed = 0
for i = 2, #ARGV do
  local m = ARGV[i]
  local id = string.sub(m, MS_DIGITS + 2)
  local key = ARGV[1] .. ':task:' .. id
  local v = redis.call('GET', key)
  if v then
    local f = header(v)
    if f and f[F_MEMBER] == m then
      unrecord(acc, ARGV[1], f, true)
      redis.call('DEL', key)
      redis.call('DEL', ARGV[1] .. ':hist:' .. id)
      removed = removed + 1
    elseif not f then
      redis.call('DEL', key)
      redis.call('DEL', ARGV[1] .. ':files:' .. id)
      redis.call('HDEL', ARGV[1] .. ':retry:files', id)
      redis.call('ZREM', KEYS[1], m)
      removed = removed + 1
    else
      redis.call('ZREM', KEYS[1], m)
    end
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
flush(acc, ARGV[1])
return removed
"#;

/// Add task attempts of one task type in one minute.
///
/// KEYS: att:HOUR. ARGV: field `MINUTE:TASK_TYPE`, count, when the hour's attempts may
/// expire (ms since the epoch). Returns the new count of that field.
const ATTEMPTS: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'NX')
redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'GT')
return n
"#;

/// The gates (docs/retries.md#gates), for `deliver` and the gate scripts: `P:gates` (hash:
/// gate id -> its line), `P:gates:bucket` (hash: a `limit` gate's id -> `tokens\tcounted
/// ms`), `P:gates:released` (set: released gates whose parked retries are not all back in
/// the due set yet), `P:gates:pass` (hash: a `hold` gate's id -> the retries it still lets
/// through, the breaker's canaries). A line is `mode \t rate \t until ms \t task type \t category \t code \t
/// client \t signature \t since ms \t by \t reason` (`crate::gates`; empty: none).
const GATES: &str = r#"
local function gate_of(gid, line)
  local g, pos = {}, 1
  for i = 1, 8 do
    local tab = string.find(line, '\t', pos, true)
    if not tab then return nil end
    g[i] = string.sub(line, pos, tab - 1)
    pos = tab + 1
  end
  return {id = gid, line = line, mode = g[1], rate = tonumber(g[2]) or 0,
    until_ms = tonumber(g[3]), scope = {g[4], g[5], g[6], g[7], g[8]}}
end
-- Forget a gate and its bucket; its parked retries go back to the due set (`deliver`
-- moves them, a batch a step). 1 when it was active.
local function gate_release(prefix, gates, gid)
  if redis.call('HDEL', gates, gid) == 0 then return 0 end
  redis.call('HDEL', prefix .. ':gates:bucket', gid)
  redis.call('HDEL', prefix .. ':gates:pass', gid)
  if redis.call('EXISTS', prefix .. ':retry:held:' .. gid) == 1 then
    redis.call('SADD', prefix .. ':gates:released', gid)
  end
  return 1
end
-- Release the gates lapsed at `now`; the others, oldest (smallest id) first.
local function gates_in_force(prefix, gates, now)
  local all = redis.call('HGETALL', gates)
  local out = {}
  for i = 1, #all, 2 do
    local g = gate_of(all[i], all[i + 1])
    if g and g.until_ms and g.until_ms <= now then
      gate_release(prefix, gates, all[i])
    elseif g then
      table.insert(out, g)
    end
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return out
end
"#;

/// One scheduler step: move the retries due by now from the due set into the stream, each
/// leaving the due set exactly when it enters the stream (one script: never both, never
/// neither). The scheduler lock is taken or renewed first; another holder's lock answers
/// `{-1, 0, 0, 0}` and moves nothing.
///
/// With gates ([`GATES`]): lapsed gates are released; released gates' parked retries go
/// back to the due set (at most `max` a step); each `limit` gate's bucket earns `rate /
/// shards` tokens a second (at most one second's worth, at least 1) and first delivers the
/// retries it parked while spent (a `hold` with passes: as many as its passes); then every
/// due retry looked at is delivered unless a gate of its scope stops it (a `hold` without
/// passes, else a spent `limit`; the oldest such gate parks it); a delivery spends a token
/// of every `limit` and a pass of every `hold` with passes of its scope. At most `max` retries are
/// looked at in all.
///
/// KEYS: due, stream, lock, gates. ARGV: prefix, now (ms), max entries, stream MAXLEN
/// (approximate), lock token, lock TTL (ms), shards, then the nine stream field names
/// (`layout::STREAM_FIELDS`) and the three of failed files (`layout::STREAM_FILE_FIELDS`:
/// `FilesKey`, `Files`, `FailedFiles`, added for a task with files from `P:retry:files`). Returns `{moved, dropped, more, held}`: `dropped` counts due
/// entries whose task is no longer scheduled (not delivered), `more` is 1 when due entries
/// (or released gates' parked ones) are left, `held` counts retries parked now.
const DELIVER: &str = r#"
local lock = redis.call('GET', KEYS[3])
if lock and lock ~= ARGV[5] then return {-1, 0, 0, 0} end
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
local prefix, now, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local parked = prefix .. ':retry:parked'
local released = prefix .. ':gates:released'
local moved, dropped, held, looked = 0, 0, 0, 0
-- The failed files retries carry (`P:retry:files`, see `files::retry_entry`): looked up per
-- delivered retry only while some task of this shard has files (one EXISTS a step else).
local files = prefix .. ':retry:files'
local with_files = redis.call('EXISTS', files) == 1
local function send(id, f, v)
  local _, body = split(v)
  local x = with_files and redis.call('HGET', files, id)
  if not x then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
      ARGV[8], id, ARGV[9], f[F_TASK_TYPE], ARGV[10], f[F_CLIENT_ID], ARGV[11], f[F_CODEBASE_PATH], ARGV[12], f[F_ATTEMPT],
      ARGV[13], f[F_ERROR_CODE], ARGV[14], f[F_CATEGORY], ARGV[15], due_at(f, body),
      ARGV[16], f[F_BY])
  else
    local tab = string.find(x, '\t', 1, true)
    local n, kind, what = x, '', ''
    if tab then n, kind, what = string.sub(x, 1, tab - 1), string.sub(x, tab + 1, tab + 1), string.sub(x, tab + 2) end
    local name = ARGV[17]
    if kind == 'i' then name = ARGV[18] elseif kind == 'k' then what = prefix .. ':files:' .. id end
    if kind == '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
        ARGV[8], id, ARGV[9], f[F_TASK_TYPE], ARGV[10], f[F_CLIENT_ID], ARGV[11], f[F_CODEBASE_PATH], ARGV[12], f[F_ATTEMPT],
        ARGV[13], f[F_ERROR_CODE], ARGV[14], f[F_CATEGORY], ARGV[15], due_at(f, body),
        ARGV[16], f[F_BY], ARGV[19], n)
    else
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
        ARGV[8], id, ARGV[9], f[F_TASK_TYPE], ARGV[10], f[F_CLIENT_ID], ARGV[11], f[F_CODEBASE_PATH], ARGV[12], f[F_ATTEMPT],
        ARGV[13], f[F_ERROR_CODE], ARGV[14], f[F_CATEGORY], ARGV[15], due_at(f, body),
        ARGV[16], f[F_BY], ARGV[19], n, name, what)
    end
  end
  moved = moved + 1
end
local gates = {}
if redis.call('EXISTS', KEYS[4]) == 1 then gates = gates_in_force(prefix, KEYS[4], now) end
if redis.call('EXISTS', released) == 1 then
  local budget = max
  for _, gid in ipairs(redis.call('SMEMBERS', released)) do
    if budget <= 0 then break end
    local h = prefix .. ':retry:held:' .. gid
    local back = redis.call('ZRANGE', h, 0, budget - 1, 'WITHSCORES')
    for i = 1, #back, 2 do
      redis.call('ZADD', KEYS[1], back[i + 1], back[i])
      redis.call('ZREM', h, back[i])
      redis.call('HDEL', parked, back[i])
      budget = budget - 1
    end
    if redis.call('EXISTS', h) == 0 then redis.call('SREM', released, gid) end
  end
end
if #gates == 0 then
  local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, max)
  for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    local v = redis.call('GET', prefix .. ':task:' .. id)
    local f = v and header(v)
    if f and retrying(f) and f[F_STATE] == 's' then send(id, f, v) else dropped = dropped + 1 end
  end
else
  -- Gates by the set of scope fields they name (a mask): per mask, a table from the values
  -- of those fields (tab-joined; no value holds a tab) to its gates. A retry looks up its
  -- own values once per mask in use, so gates that do not match cost nothing per gate.
  local shards = tonumber(ARGV[7])
  local bucket = prefix .. ':gates:bucket'
  local pass = prefix .. ':gates:pass'
  local passes = {}
  if redis.call('EXISTS', pass) == 1 then
    local all = redis.call('HGETALL', pass)
    for i = 1, #all, 2 do passes[all[i]] = tonumber(all[i + 1]) or 0 end
  end
  local FIELDS = {F_TASK_TYPE, F_CATEGORY, F_ERROR_CODE, F_CLIENT_ID, F_SIGNATURE}
  local masks, mask_of = {}, {}
  for _, g in ipairs(gates) do
    local bits, idx, vals = 0, {}, {}
    for i = 1, 5 do
      if g.scope[i] ~= '' then
        bits = bits + 2 ^ (i - 1)
        table.insert(idx, FIELDS[i])
        table.insert(vals, g.scope[i])
      end
    end
    local m = mask_of[bits]
    if not m then
      m = {idx = idx, map = {}}
      mask_of[bits] = m
      table.insert(masks, m)
    end
    local k = table.concat(vals, '\t')
    local list = m.map[k]
    if not list then list = {} m.map[k] = list end
    table.insert(list, g)
    if g.mode == 'hold' then g.tokens = passes[g.id] or 0 end
    if g.mode == 'limit' then
      local rate = g.rate / shards
      local tokens, at = 0, now
      local b = redis.call('HGET', bucket, g.id)
      if b then
        local tab = string.find(b, '\t', 1, true)
        tokens = tonumber(string.sub(b, 1, tab - 1)) or 0
        at = tonumber(string.sub(b, tab + 1)) or now
      end
      if now > at then
        tokens = math.min(tokens + (now - at) / 1000 * rate, math.max(rate, 1))
        at = now
      end
      g.tokens, g.at = tokens, at
    end
  end
  -- The gate that stops a retry (the oldest hold, else the oldest spent limit of its
  -- scope), or nil after spending a token of every limit of its scope.
  local function stopper(f)
    local hold, spent, charge = nil, nil, nil
    for _, m in ipairs(masks) do
      local k
      if #m.idx == 1 then
        k = f[m.idx[1]]
      else
        local vals = {}
        for j, fi in ipairs(m.idx) do vals[j] = f[fi] end
        k = table.concat(vals, '\t')
      end
      local list = m.map[k]
      if list then
        for _, g in ipairs(list) do
          if g.mode == 'hold' and g.tokens < 1 then
            if not hold or g.id < hold.id then hold = g end
          elseif g.tokens < 1 then
            if not spent or g.id < spent.id then spent = g end
          else
            charge = charge or {}
            table.insert(charge, g)
          end
        end
      end
    end
    if hold then return hold end
    if spent then return spent end
    if charge then
      for _, g in ipairs(charge) do g.tokens = g.tokens - 1 end
    end
    return nil
  end
  local function consider(id, score)
    local v = redis.call('GET', prefix .. ':task:' .. id)
    local f = v and header(v)
    if not (f and retrying(f) and f[F_STATE] == 's') then
      dropped = dropped + 1
      return
    end
    local g = stopper(f)
    if g then
      redis.call('ZADD', prefix .. ':retry:held:' .. g.id, score, id)
      redis.call('HSET', parked, id, g.id)
      held = held + 1
    else
      send(id, f, v)
    end
  end
  for _, g in ipairs(gates) do
    if g.tokens and g.tokens >= 1 and looked < max then
      local h = prefix .. ':retry:held:' .. g.id
      local n = math.min(math.floor(g.tokens), max - looked)
      local ids = redis.call('ZRANGE', h, 0, n - 1, 'WITHSCORES')
      for i = 1, #ids, 2 do
        redis.call('ZREM', h, ids[i])
        redis.call('HDEL', parked, ids[i])
        looked = looked + 1
        consider(ids[i], ids[i + 1])
      end
    end
  end
  if looked < max then
    local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, max - looked, 'WITHSCORES')
    for i = 1, #ids, 2 do
      redis.call('ZREM', KEYS[1], ids[i])
      consider(ids[i], ids[i + 1])
    end
  end
  for _, g in ipairs(gates) do
    if g.mode == 'limit' then
      redis.call('HSET', bucket, g.id, string.format('%.6f\t%.0f', g.tokens, g.at))
    elseif passes[g.id] and passes[g.id] ~= g.tokens then
      if g.tokens >= 1 then
        redis.call('HSET', pass, g.id, string.format('%d', g.tokens))
      else
        redis.call('HDEL', pass, g.id)
      end
    end
  end
end
local more = 0
if #redis.call('ZRANGE', KEYS[1], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, 1) > 0
  or redis.call('EXISTS', released) == 1 then more = 1 end
return {moved, dropped, more, held}
"#;

/// Make a gate active unless `max` gates not lapsed at `now` are. KEYS: gates. ARGV: prefix,
/// now (ms), max, gate id, line, `limit` or `hold`. Returns 1 created, 0 too many.
const GATE_CREATE: &str = r#"
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3])
  and #gates_in_force(ARGV[1], KEYS[1], tonumber(ARGV[2])) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
if ARGV[6] == 'limit' then
  redis.call('HSET', ARGV[1] .. ':gates:bucket', ARGV[4], '0\t' .. ARGV[2])
end
return 1
"#;

/// Let retries through a `hold` gate (its passes, replaced; 0 takes them back). KEYS: gates.
/// ARGV: prefix, gate id, passes. Returns 1, or 0 when no such `hold` is active.
const GATE_PASS: &str = r#"
local line = redis.call('HGET', KEYS[1], ARGV[2])
if not line or string.sub(line, 1, 5) ~= 'hold\t' then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', ARGV[1] .. ':gates:pass', ARGV[2], ARGV[3])
else
  redis.call('HDEL', ARGV[1] .. ':gates:pass', ARGV[2])
end
return 1
"#;

/// Release a gate. KEYS: gates. ARGV: prefix, gate id. Returns 1 released, 0 unknown.
const GATE_RELEASE: &str = r#"
return gate_release(ARGV[1], KEYS[1], ARGV[2])
"#;

/// The gates in force at `now` (lapsed ones are released). KEYS: gates. ARGV: prefix, now
/// (ms), `full`: `1` every gate with its line, `0` only the gates holding anything, without
/// their line (every shard keeps every gate: one shard answers the lines, the others only
/// their held counts). Returns `{id, line, held, ...}`, oldest first.
const GATE_LIST: &str = r#"
local out = {}
local full = ARGV[3] == '1'
for _, g in ipairs(gates_in_force(ARGV[1], KEYS[1], tonumber(ARGV[2]))) do
  local held = redis.call('ZCARD', ARGV[1] .. ':retry:held:' .. g.id)
  if full or held > 0 then
    table.insert(out, g.id)
    table.insert(out, full and g.line or '')
    table.insert(out, held)
  end
end
return out
"#;

/// The task of a per-task retry script: its id, stored value and header, or the script's
/// answer when it has none: `{'resolved', 0}` (a tombstone exists), `{'missing', 0}`, or an
/// error for a corrupt record.
const LOOKUP: &str = r#"
local function lookup(prefix, key)
  local id = string.sub(key, #prefix + 7)
  local v = redis.call('GET', key)
  if not v then
    if redis.call('EXISTS', prefix .. ':resolved:' .. id) == 1 then return nil, {'resolved', 0} end
    return nil, {'missing', 0}
  end
  local f = header(v)
  if not f then return nil, redis.error_reply('ERR corrupt record ' .. key) end
  return {id = id, v = v, f = f}, nil
end
"#;

/// Retry now (an operator): the task's next attempt becomes due at once; a retry already
/// delivered (scheduled, but no longer in the due set) is left alone.
///
/// KEYS: record, due. ARGV: prefix, now (ms), now (RFC 3339). Returns `{status, attempt}`:
/// `scheduled`, `delivered`, `resolved`, `missing`, or `upgrade` (a record written before
/// retries existed: the caller re-records it first).
const RETRY_NOW: &str = r#"
local prefix = ARGV[1]
local t, answer = lookup(prefix, KEYS[1])
if not t then return answer end
local id, v, f = t.id, t.v, t.f
if not retrying(f) then return {'upgrade', 0} end
local attempt = tonumber(f[F_ATTEMPT])
if f[F_STATE] == 's' and not redis.call('ZSCORE', KEYS[2], id) and not parked_score(prefix, id) then
  return {'delivered', attempt}
end
unpark(prefix, id)
local was = f[F_STATE]
f[F_STATE] = 's'
f[F_DUE_MS] = ARGV[2]
f[F_BY] = 'operator'
local _, body = split(v)
body = with_due(f, body, ARGV[3])
redis.call('SET', KEYS[1], join(f) .. '\n' .. body, 'KEEPTTL')
if was ~= 's' then
  redis.call('ZREM', retry_index(prefix, was), f[F_MEMBER])
  redis.call('ZADD', retry_index(prefix, 's'), 0, f[F_MEMBER])
end
redis.call('ZADD', KEYS[2], ARGV[2], id)
return {'scheduled', attempt}
"#;

/// Cancel a scheduled retry that is not delivered yet.
///
/// KEYS: record, due. ARGV: prefix. Returns `{status, attempt}`: `cancelled`,
/// `not_scheduled`, `delivered`, `resolved` or `missing`.
const CANCEL: &str = r#"
local prefix = ARGV[1]
local t, answer = lookup(prefix, KEYS[1])
if not t then return answer end
local id, v, f = t.id, t.v, t.f
if not retrying(f) or f[F_STATE] ~= 's' then return {'not_scheduled', 0} end
local attempt = tonumber(f[F_ATTEMPT])
if not redis.call('ZSCORE', KEYS[2], id) and not parked_score(prefix, id) then
  return {'delivered', attempt}
end
unpark(prefix, id)
f[F_STATE] = 'c'
f[F_DUE_MS] = ''
f[F_BY] = ''
local _, body = split(v)
body = with_due(f, body, '')
redis.call('SET', KEYS[1], join(f) .. '\n' .. body, 'KEEPTTL')
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', retry_index(prefix, 's'), f[F_MEMBER])
redis.call('ZADD', retry_index(prefix, 'c'), 0, f[F_MEMBER])
return {'cancelled', attempt}
"#;

/// Resolve: the task's retry succeeded. It leaves its record, indexes, group and due set
/// (its failure stays counted), its history goes, a tombstone remembers it, and the minute
/// of `now` counts one recovery (field `MINUTE:r`).
///
/// KEYS: record. ARGV: prefix, now (ms), tombstone TTL (ms), when that hour's counters may
/// expire (ms). Returns 1 resolved, 2 resolved before, 0 unknown.
const RESOLVE: &str = r#"
local prefix = ARGV[1]
local id = string.sub(KEYS[1], #prefix + 7)
local tomb = prefix .. ':resolved:' .. id
local v = redis.call('GET', KEYS[1])
if not v then
  if redis.call('EXISTS', tomb) == 1 then return 2 end
  return 0
end
local f = header(v)
local acc = acc_new()
if f then unrecord(acc, prefix, f, false) else
  redis.call('DEL', prefix .. ':files:' .. id)
  redis.call('HDEL', prefix .. ':retry:files', id)
end
redis.call('DEL', KEYS[1])
redis.call('DEL', prefix .. ':hist:' .. id)
redis.call('SET', tomb, ARGV[2], 'PX', ARGV[3])
local minute = math.floor(tonumber(ARGV[2]) / 60000)
local k = prefix .. ':cnt:' .. string.format('%d', math.floor(minute / 60))
acc_add(acc, k, string.format('%d', minute) .. ':r', 1)
local at = tonumber(ARGV[4])
if not acc.expiry[k] or acc.expiry[k] < at then acc.expiry[k] = at end
flush(acc, prefix)
return 1
"#;

/// Resolve as superseded the failures of one client's index that failed before a success
/// and have its task type and codebase path: each as `RESOLVE` does (out of every index,
/// group and the due set, the record and history deleted, a tombstone), counted in the
/// success's minute as `:s`. At most ARGV[8] index members are looked at per call.
/// KEYS: the client's index. ARGV: prefix, task type, codebase path, success ms, tombstone
/// ttl (ms), counters expiry (ms), the member to start after ('' for the oldest), max.
/// Returns `{superseded, last member looked at or ''}` ('' when the walk is done).
const SUPERSEDE: &str = r#"
local prefix = ARGV[1]
local bound = string.format('%0' .. MS_DIGITS .. 'd', tonumber(ARGV[4]))
local from = '-'
if ARGV[7] ~= '' then from = '(' .. ARGV[7] end
local max = tonumber(ARGV[8])
local members = redis.call('ZRANGE', KEYS[1], from, '(' .. bound, 'BYLEX', 'LIMIT', 0, max)
local acc = acc_new()
local n = 0
-- A record of another codebase is passed over with one plain search for the path as a
-- header field (cheaper than splitting its header); a match is checked field by field.
local needle = '\t' .. ARGV[3] .. '\t'
for _, m in ipairs(members) do
  local id = string.sub(m, MS_DIGITS + 2)
  local key = prefix .. ':task:' .. id
  local v = redis.call('GET', key)
  local f = v and string.find(v, needle, 1, true) and header(v)
  if f and #f >= F_CODEBASE_PATH and f[F_TASK_TYPE] == ARGV[2] and f[F_CODEBASE_PATH] == ARGV[3]
    and f[F_MEMBER] == m then
    unrecord(acc, prefix, f, false)
    redis.call('DEL', key)
    redis.call('DEL', prefix .. ':hist:' .. id)
    redis.call('SET', prefix .. ':resolved:' .. id, ARGV[4], 'PX', ARGV[5])
    n = n + 1
  end
end
if n > 0 then
  local minute = math.floor(tonumber(ARGV[4]) / 60000)
  local k = prefix .. ':cnt:' .. string.format('%d', math.floor(minute / 60))
  acc_add(acc, k, string.format('%d', minute) .. ':s', n)
  local at = tonumber(ARGV[6])
  if not acc.expiry[k] or acc.expiry[k] < at then acc.expiry[k] = at end
  flush(acc, prefix)
end
local last = ''
if #members == max then last = members[#members] end
return {n, last}
"#;

/// Release a lock only if we still own it. KEYS: lock. ARGV: token.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Extend a lock only if we still own it. KEYS: lock. ARGV: token, ttl ms.
const EXTEND: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// All scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) record: Script,
    pub(crate) record_many: Script,
    pub(crate) remove: Script,
    pub(crate) trim: Script,
    pub(crate) attempts: Script,
    pub(crate) unlock: Script,
    pub(crate) extend: Script,
    pub(crate) deliver: Script,
    pub(crate) gate_create: Script,
    pub(crate) gate_release: Script,
    pub(crate) gate_pass: Script,
    pub(crate) supersede: Script,
    pub(crate) gate_list: Script,
    pub(crate) retry_now: Script,
    pub(crate) cancel: Script,
    pub(crate) resolve: Script,
    pub(crate) migrate: Script,
}

/// The record's layout as Lua locals, from `failed_tasks_store::stored` (see [`HELPERS`]),
/// and `FIELD_INDEXES`, the indexes kept from header fields ([`IndexKind::BY_FIELD`]).
fn layout_prelude() -> String {
    use crate::layout::IndexKind;
    use failed_tasks_store::stored::{Field, MS_DIGITS, VERSION, VERSIONS};
    use std::fmt::Write as _;
    let mut out = String::new();
    for field in Field::ALL {
        let _ = writeln!(out, "local F_{} = {}", field.name(), field.at() + 1);
    }
    let known: Vec<String> = VERSIONS.iter().map(|(v, n)| format!("{v} = {n}")).collect();
    let _ = writeln!(out, "local KNOWN = {{{}}}", known.join(", "));
    let indexes: Vec<String> = IndexKind::BY_FIELD
        .iter()
        .map(|(kind, field)| format!("{{'{}', F_{}}}", kind.segment(), field.name()))
        .collect();
    let _ = writeln!(out, "local FIELD_INDEXES = {{{}}}", indexes.join(", "));
    let _ = writeln!(out, "local CURRENT = '{VERSION}'");
    let _ = writeln!(out, "local MS_DIGITS = {MS_DIGITS}");
    out
}

fn with_helpers(body: &str) -> String {
    let helpers = HELPERS.replace(
        "{TOP_CAP}",
        &failed_tasks_domain::stats::TRACKED_PER_BUCKET.to_string(),
    );
    format!("{}{helpers}{body}", layout_prelude())
}

impl Scripts {
    /// The process-wide scripts (hashing happens once).
    pub(crate) fn get() -> &'static Scripts {
        static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| Scripts {
            record: Script::new("record", with_helpers(RECORD)),
            record_many: Script::new(
                "record_many",
                with_helpers(&RECORD_MANY.replace("{LATE}", LATE)),
            ),
            remove: Script::new("remove", with_helpers(REMOVE)),
            trim: Script::new("trim", with_helpers(TRIM)),
            // HINCRBY: running it twice would count twice.
            attempts: Script::adding("attempts", ATTEMPTS.to_owned()),
            unlock: Script::new("unlock", UNLOCK.to_owned()),
            extend: Script::new("extend", EXTEND.to_owned()),
            deliver: Script::new("deliver", with_helpers(&format!("{GATES}{DELIVER}"))),
            gate_create: Script::new("gate_create", format!("{GATES}{GATE_CREATE}")),
            gate_release: Script::new("gate_release", format!("{GATES}{GATE_RELEASE}")),
            gate_pass: Script::new("gate_pass", GATE_PASS.to_owned()),
            gate_list: Script::new("gate_list", format!("{GATES}{GATE_LIST}")),
            retry_now: Script::new("retry_now", with_helpers(&format!("{LOOKUP}{RETRY_NOW}"))),
            cancel: Script::new("cancel", with_helpers(&format!("{LOOKUP}{CANCEL}"))),
            resolve: Script::new("resolve", with_helpers(RESOLVE)),
            // Counts add up when run twice: one write attempt.
            supersede: Script::adding("supersede", with_helpers(SUPERSEDE)),
            migrate: Script::new("migrate", with_helpers(MIGRATE)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script reads header fields by the names `failed_tasks_store::stored` defines:
    /// no numbered field, version tag or member width is spelled in the Lua itself.
    #[test]
    fn scripts_name_header_fields_instead_of_numbering_them() {
        let numbered = numbered_forms(&[r"f[", r"o[", r"out["]);
        for (name, lua) in [
            ("helpers", HELPERS),
            ("record", RECORD),
            ("migrate", MIGRATE),
            ("record_many", RECORD_MANY),
            ("remove", REMOVE),
            ("trim", TRIM),
            ("gates", GATES),
            ("deliver", DELIVER),
            ("lookup", LOOKUP),
            ("retry_now", RETRY_NOW),
            ("cancel", CANCEL),
            ("resolve", RESOLVE),
            ("supersede", SUPERSEDE),
        ] {
            for line in lua.lines() {
                assert!(
                    !numbered.iter().any(|n| line.contains(n.as_str())),
                    "{name}: a numbered header field in {line:?}"
                );
                for tag in ["'v1'", "'v2'", "'v3'", "'v4'", ", 15)", ", 17)"] {
                    assert!(!line.contains(tag), "{name}: {tag} spelled in {line:?}");
                }
            }
        }
    }

    /// `f[1`, `o[2`, … for every digit: the forms a numbered field index takes.
    fn numbered_forms(arrays: &[&str]) -> Vec<String> {
        arrays
            .iter()
            .flat_map(|a| (0..10).map(move |d| format!("{a}{d}")))
            .collect()
    }

    #[test]
    fn the_prelude_names_every_field_at_its_position() {
        let prelude = layout_prelude();
        assert!(prelude.contains("local F_VERSION = 1\n"), "{prelude}");
        assert!(prelude.contains("local F_MEMBER = 2\n"), "{prelude}");
        assert!(prelude.contains("local F_DUE_AT = 16\n"), "{prelude}");
        assert!(
            prelude.contains("local KNOWN = {v4 = 16, v3 = 13, v2 = 7, v1 = 6}\n"),
            "{prelude}"
        );
        assert!(prelude.contains("local CURRENT = 'v4'\n"), "{prelude}");
        assert!(
            prelude.contains(
                "local FIELD_INDEXES = {{'category', F_CATEGORY}, {'type', F_TASK_TYPE}, \
                 {'client', F_CLIENT_ID}, {'code', F_ERROR_CODE}}\n"
            ),
            "{prelude}"
        );
    }
}
