//! The Lua scripts that keep records and indexes consistent (see `docs/redis-layout.md`).
//!
//! Every script finds a record's old index entries from its header line (see
//! [`crate::record`]), so an upsert that changes the fail time, category, task type, client
//! or error code moves the task in every index in the same atomic step. Keys built inside a
//! script share the prefix's hash tag, so they live in the slot of the declared keys.

use std::sync::OnceLock;

use crate::conn::Script;

/// Shared helpers: parse a header, remove a record's index entries.
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
  if #out ~= 6 or out[1] ~= 'v1' then return nil end
  return out
end
local function unindex(prefix, f)
  local m = f[2]
  redis.call('ZREM', prefix .. ':idx:all', m)
  redis.call('ZREM', prefix .. ':idx:category:' .. f[3], m)
  redis.call('ZREM', prefix .. ':idx:type:' .. f[4], m)
  redis.call('ZREM', prefix .. ':idx:client:' .. f[5], m)
  redis.call('ZREM', prefix .. ':idx:code:' .. f[6], m)
end
"#;

/// Upsert one task.
///
/// KEYS: record, idx:all, idx:category:C, idx:type:T, idx:client:C, idx:code:E.
/// ARGV: prefix, stored value, record TTL in ms, member.
/// Returns 1 when the task id was new, 0 when it replaced a record.
const RECORD: &str = r#"
local old = redis.call('GET', KEYS[1])
local created = 1
if old then
  created = 0
  local f = header(old)
  if f then unindex(ARGV[1], f) end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 2, 6 do
  redis.call('ZADD', KEYS[i], 0, ARGV[4])
end
return created
"#;

/// Upsert several tasks in one call: [`RECORD`] for each, in order (a later task with the
/// same id sees the earlier one as its old record).
///
/// KEYS: per task, its six keys in [`RECORD`]'s order (6 x n keys).
/// ARGV: prefix, then per task: stored value, record TTL in ms, member (1 + 3 x n).
/// Returns one flag per task: 1 when its id was new, 0 when it replaced a record.
const RECORD_MANY: &str = r#"
local prefix = ARGV[1]
local out = {}
for t = 0, #KEYS / 6 - 1 do
  local k = t * 6
  local a = 1 + t * 3
  local old = redis.call('GET', KEYS[k + 1])
  local created = 1
  if old then
    created = 0
    local f = header(old)
    if f then unindex(prefix, f) end
  end
  redis.call('SET', KEYS[k + 1], ARGV[a + 1], 'PX', ARGV[a + 2])
  for i = 2, 6 do
    redis.call('ZADD', KEYS[k + i], 0, ARGV[a + 3])
  end
  out[t + 1] = created
end
return out
"#;

/// Remove one task and all its index entries.
///
/// KEYS: record. ARGV: prefix. Returns 1 when a record was removed.
const REMOVE: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local f = header(old)
if f then unindex(ARGV[1], f) end
redis.call('DEL', KEYS[1])
return 1
"#;

/// Trim the tasks named by members of idx:all (oldest first, chosen by the janitor).
///
/// KEYS: idx:all. ARGV: prefix, member... Returns how many records were removed. A member
/// whose record now has another member (re-recorded since) only loses that stale entry;
/// a member without a record (expired) is dropped from idx:all.
const TRIM: &str = r#"
local removed = 0
for i = 2, #ARGV do
  local m = ARGV[i]
  local id = string.sub(m, 17)
  local key = ARGV[1] .. ':task:' .. id
  local v = redis.call('GET', key)
  if v then
    local f = header(v)
    if f and f[2] == m then
      unindex(ARGV[1], f)
      redis.call('DEL', key)
      removed = removed + 1
    elseif not f then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], m)
      removed = removed + 1
    else
      redis.call('ZREM', KEYS[1], m)
    end
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return removed
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
    pub(crate) unlock: Script,
    pub(crate) extend: Script,
}

fn with_helpers(body: &str) -> String {
    format!("{HELPERS}{body}")
}

impl Scripts {
    /// The process-wide scripts (hashing happens once).
    pub(crate) fn get() -> &'static Scripts {
        static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| Scripts {
            record: Script::new("record", with_helpers(RECORD)),
            record_many: Script::new("record_many", with_helpers(RECORD_MANY)),
            remove: Script::new("remove", with_helpers(REMOVE)),
            trim: Script::new("trim", with_helpers(TRIM)),
            unlock: Script::new("unlock", UNLOCK.to_owned()),
            extend: Script::new("extend", EXTEND.to_owned()),
        })
    }
}
