#!lua name=decayq
-- decayq's job state machine, as one Redis Functions library. Every state
-- change of a job happens here, in one atomic step, and every settle checks
-- the claim's epoch (compare-and-set), so a superseded worker can change
-- nothing. All keys a call touches share the job's {scope} hash tag.
--
-- Replies are arrays whose first element is a status:
--   claimed | duplicate | terminal | exhausted | busy | not_due | stale
--                                                (claim)
--   ok | fenced | terminal | rejected            (settles, cancel, renew)

-- Every change of this file bumps LIB_VERSION (and DQ_FUNCTIONS_VERSION in
-- dq_store.c): a server keeps a library of the same version as it is.
local LIB_VERSION = '5'
local TERMINAL = {completed = true, dead = true, cancelled = true,
                  duplicate = true}

local function s(v)
  if v == false or v == nil then return '' end
  return tostring(v)
end

-- Loads state and epoch and checks that the caller still holds the claim.
-- Returns nil when it does, or the reply to send back.
local function fence(job, epoch)
  local st = redis.call('HMGET', job, 'state', 'epoch')
  if not st[1] then
    return {'fenced', 'missing', '0'}
  end
  if TERMINAL[st[1]] then
    return {'terminal', st[1], s(st[2])}
  end
  if tonumber(st[2]) ~= epoch or st[1] ~= 'in_progress' then
    return {'fenced', st[1], s(st[2])}
  end
  return nil
end

-- claim(KEYS: job [, idem]; ARGV: now, lease_ms, worker, kind, max_attempts,
--       job_id, retention_ms [, msg, copy_attempts])
-- msg names the delivered record ("topic/partition/offset"); copy_attempts
-- is the decayq-attempts of a delay-tier copy, or -1. In this order:
--  - a terminal job is refused (terminal);
--  - a job whose idempotency key belongs to another job is settled
--    duplicate (duplicate);
--  - the record that holds the current claim, delivered again (its owner
--    died or lost the partition), takes the claim over, live or not;
--  - a delay copy older than the job's attempts is superseded by the run
--    that counted them (stale);
--  - a live claim of another record is left alone, and costs nothing
--    (busy: the caller parks this delivery);
--  - a retry whose not-before time is ahead is not run (not_due: the
--    caller defers it; ref is the time);
--  - a job whose attempts are spent is refused (exhausted: the caller
--    dead-letters it as crash_loop);
--  - otherwise the attempt is counted, the epoch bumped and the lease
--    taken (claimed).
local function claim(keys, args)
  local job = keys[1]
  local now, lease = tonumber(args[1]), tonumber(args[2])
  local at = args[1] -- written as given: no number formatting
  local worker, kind = args[3], args[4]
  local max_attempts, id = tonumber(args[5]), args[6]
  local retention = tonumber(args[7])
  local msg, copy_attempts = args[8] or '', tonumber(args[9]) or -1
  local st = redis.call('HMGET', job, 'state', 'attempts', 'epoch',
                        'lease_until', 'duplicate_of', 'result_memory_id',
                        'claimed_msg', 'not_before')
  local state = st[1]
  local attempts, epoch = tonumber(st[2]) or 0, tonumber(st[3]) or 0
  local function reply(status, ref)
    return {status, s(state), tostring(attempts), tostring(epoch), ref}
  end
  if state and TERMINAL[state] then
    return reply('terminal', s(st[5]) .. s(st[6]))
  end
  if keys[2] then
    local first = redis.call('SET', keys[2], id, 'NX', 'PX', retention, 'GET')
    if first and first ~= id then
      redis.call('HSET', job, 'state', 'duplicate', 'duplicate_of', first,
                 'kind', kind, 'updated_at', at)
      redis.call('HSETNX', job, 'created_at', at)
      redis.call('PEXPIRE', job, retention)
      return {'duplicate', first, tostring(attempts), tostring(epoch), first}
    end
  end
  local same = msg ~= '' and st[7] == msg
  local live = state == 'in_progress' and (tonumber(st[4]) or 0) > now
  if not same then
    if copy_attempts >= 0 and copy_attempts < attempts then
      return reply('stale', '')
    end
    if live then
      return reply('busy', s(st[4]))
    end
  end
  if state == 'retry_wait' and (tonumber(st[8]) or 0) > now then
    return reply('not_due', s(st[8]))
  end
  if attempts >= max_attempts then
    return reply('exhausted', '')
  end
  attempts, epoch = attempts + 1, epoch + 1
  if state then
    redis.call('HSET', job, 'state', 'in_progress', 'kind', kind,
               'attempts', attempts, 'epoch', epoch,
               'lease_until', now + lease, 'claimed_by', worker,
               'claimed_msg', msg, 'updated_at', at)
    redis.call('HSETNX', job, 'created_at', at)
    redis.call('PERSIST', job)
  else
    -- The common case, a first claim: one write, and no TTL to clear.
    redis.call('HSET', job, 'state', 'in_progress', 'kind', kind,
               'attempts', attempts, 'epoch', epoch,
               'lease_until', now + lease, 'claimed_by', worker,
               'claimed_msg', msg, 'updated_at', at, 'created_at', at)
  end
  return {'claimed', s(state), tostring(attempts), tostring(epoch),
          live and 'took_over_live_lease' or ''}
end

-- A terminal state keeps its own time (completed_at and the like) and no
-- claim: lease_until, claimed_msg and updated_at go, which keeps the
-- retained hash small.
local function finish(job, retention, fields)
  redis.call('HSET', job, unpack(fields))
  redis.call('HDEL', job, 'lease_until', 'claimed_msg', 'updated_at')
  redis.call('PEXPIRE', job, retention)
end

-- Reads the sources of a compression; returns items or a rejection.
local function load_sources(keys, first, ids, want_type, text_field)
  local items = {}
  for i = first, #keys do
    local id = ids[i - first + 1]
    local h = redis.call('HMGET', keys[i], 'status', 'type', text_field,
                         'created_at')
    if not h[1] then
      return nil, {'rejected', 'decay.compress.source_missing',
                   'source ' .. id .. ' does not exist'}
    end
    if h[1] ~= 'active' then
      return nil, {'rejected', 'decay.compress.source_inactive',
                   'source ' .. id .. ' is ' .. h[1] .. ', not active'}
    end
    if want_type and h[2] ~= want_type then
      return nil, {'rejected', 'decay.compress.source_wrong_type',
                   'source ' .. id .. ' is of type ' .. s(h[2]) ..
                   ', not ' .. want_type}
    end
    items[#items + 1] = {id = id, text = s(h[3]),
                         created = tonumber(h[4]) or 0}
  end
  return items, nil
end

-- Sources in the order they were remembered; ties by id.
local function by_created(a, b)
  if a.created ~= b.created then return a.created < b.created end
  return a.id < b.id
end

-- complete(KEYS: job, target, sources...;
--          ARGV: epoch, now, retention_ms, kind, job_id, method, scope,
--                result_id, source ids...)
-- target is the summary memory (compressions) or the scope's review stream
-- (expired_principle_review). The effect and `completed` are one step.
local function complete(keys, args)
  local job, target = keys[1], keys[2]
  local epoch, now = tonumber(args[1]), args[2] -- now: written as given
  local retention, kind, job_id = tonumber(args[3]), args[4], args[5]
  local method, scope, result_id = args[6], args[7], args[8]
  local ids = {}
  for i = 9, #args do ids[#ids + 1] = args[i] end

  local bad = fence(job, epoch)
  if bad then return bad end

  if kind == 'expired_principle_review' then
    local items, rej = load_sources(keys, 3, ids, nil, 'claim')
    if rej then return rej end
    local entry = redis.call('XADD', target, '*', 'job_id', job_id,
                             'scope', scope, 'principle_ids',
                             cjson.encode(ids), 'opened_at', now)
    for i = 3, #keys do
      redis.call('HSET', keys[i], 'review_state', 'open', 'review_job',
                 job_id, 'review_entry', entry)
    end
    finish(job, retention, {'state', 'completed', 'completed_at', now,
                                 'result_review_id', entry})
    return {'ok', entry}
  end

  local want, text_field = 'candidate', 'claim'
  if kind == 'episode_compression' then want, text_field = nil, 'content' end
  local items, rej = load_sources(keys, 3, ids, want, text_field)
  if rej then return rej end
  table.sort(items, by_created)
  local texts, ordered = {}, {}
  for i, it in ipairs(items) do
    texts[i] = it.text
    ordered[i] = it.id
  end
  redis.call('HSET', target, 'id', result_id, 'scope', scope,
             'type', 'summary', 'status', 'active',
             'claim', table.concat(texts, '\n'), 'created_at', now,
             'source_kind', kind, 'source_ids', cjson.encode(ordered),
             'job_id', job_id, 'method', method)
  for i = 3, #keys do
    redis.call('HSET', keys[i], 'status', 'compressed', 'compressed_into',
               result_id, 'compressed_at', now)
  end
  finish(job, retention, {'state', 'completed', 'completed_at', now,
                               'result_memory_id', result_id})
  return {'ok', result_id}
end

-- retry(KEYS: job; ARGV: epoch, now, not_before, class, code, message)
local function retry(keys, args)
  local epoch, now = tonumber(args[1]), tonumber(args[2])
  local bad = fence(keys[1], epoch)
  if bad then return bad end
  redis.call('HSET', keys[1], 'state', 'retry_wait', 'lease_until', 0,
             'not_before', args[3], 'error_class', args[4],
             'last_error', args[5], 'last_error_message', args[6],
             'updated_at', now)
  return {'ok', 'retry_wait'}
end

-- dead(KEYS: job; ARGV: epoch, now, retention_ms, class, code, message)
-- Needs the current epoch but not a live claim, so that the holder of an
-- exhausted claim can bury it; epoch 0 buries a job that has no state yet.
local function dead(keys, args)
  local epoch, now = tonumber(args[1]), tonumber(args[2])
  local st = redis.call('HMGET', keys[1], 'state', 'epoch')
  if st[1] and TERMINAL[st[1]] then
    return {'terminal', st[1], s(st[2])}
  end
  if (tonumber(st[2]) or 0) ~= epoch then
    return {'fenced', s(st[1]), s(st[2])}
  end
  finish(keys[1], tonumber(args[3]),
         {'state', 'dead', 'dead_at', now, 'epoch', epoch,
          'error_class', args[4], 'last_error', args[5],
          'last_error_message', args[6]})
  return {'ok', 'dead'}
end

-- cancel(KEYS: job; ARGV: now, retention_ms, reason [, force])
-- For operators: no epoch; bumps it so that a running worker is fenced. A
-- job with no state is cancelled (a tombstone) only with force = '1'.
local function cancel(keys, args)
  local now = tonumber(args[1])
  local st = redis.call('HMGET', keys[1], 'state', 'epoch')
  if st[1] and TERMINAL[st[1]] then
    return {'terminal', st[1], s(st[2])}
  end
  if not st[1] and args[4] ~= '1' then
    return {'refused', 'missing', '0'}
  end
  redis.call('HINCRBY', keys[1], 'epoch', 1)
  redis.call('HSETNX', keys[1], 'created_at', now)
  finish(keys[1], tonumber(args[2]),
         {'state', 'cancelled', 'cancelled_at', now, 'cancel_reason',
          args[3]})
  return {'ok', s(st[1])}
end

-- renew(KEYS: job; ARGV: epoch, now, lease_ms)
local function renew(keys, args)
  local epoch, now = tonumber(args[1]), tonumber(args[2])
  local bad = fence(keys[1], epoch)
  if bad then return bad end
  redis.call('HSET', keys[1], 'lease_until', now + tonumber(args[3]))
  return {'ok', 'in_progress'}
end

-- replay(KEYS: job; ARGV: now, from, replay_count, dry)
-- For decayctl dlq replay: puts a dead job (or one with no state left) back
-- to pending with its attempts reset and a new epoch, which fences anything
-- still holding an old claim. `from` names the DLQ record replayed; a second
-- call with the same `from` finds the job already reset by it and answers
-- ok again, so an interrupted replay can resume. Any other live or terminal
-- state is refused with its name. With dry = '1' it answers the same and
-- writes nothing.
local function replay(keys, args)
  local now, from = tonumber(args[1]), args[2]
  local st = redis.call('HMGET', keys[1], 'state', 'replayed_from')
  local state = st[1]
  if state and state ~= 'dead' then
    if state == 'pending' and st[2] == from then
      return {'ok', 'resumed'}
    end
    if not TERMINAL[state] and st[2] then
      return {'skip', 'replayed'}
    end
    return {'skip', state}
  end
  if args[4] == '1' then return {'ok', s(state)} end
  redis.call('HINCRBY', keys[1], 'epoch', 1)
  redis.call('HSET', keys[1], 'state', 'pending', 'attempts', 0,
             'lease_until', 0, 'replayed_from', from, 'replayed_at', now,
             'replay_count', args[3], 'updated_at', now)
  redis.call('HSETNX', keys[1], 'created_at', now)
  redis.call('PERSIST', keys[1])
  return {'ok', s(state)}
end

-- The dry run of replay: reads only, so FCALL_RO may call it.
local function replay_dry(keys, args)
  args[4] = '1'
  return replay(keys, args)
end

local function version()
  return LIB_VERSION
end

redis.register_function('decayq_claim', claim)
redis.register_function('decayq_complete', complete)
redis.register_function('decayq_retry', retry)
redis.register_function('decayq_dead', dead)
redis.register_function('decayq_cancel', cancel)
redis.register_function('decayq_renew', renew)
redis.register_function('decayq_replay', replay)
redis.register_function{function_name = 'decayq_replay_dry',
                        callback = replay_dry, flags = {'no-writes'}}
redis.register_function{function_name = 'decayq_version', callback = version,
                        flags = {'no-writes'}}
