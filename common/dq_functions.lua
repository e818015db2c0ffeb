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
--
-- The memory store keeps per-scope indexes for the planner, written in the
-- same steps that write and compress memories (put, complete):
--   <ns>:idx:{scope}:candidate   active candidates, by created_at
--   <ns>:idx:{scope}:episode     active episodes, by created_at
--   <ns>:idx:{scope}:principle   active principles not under review, by
--                                expires_at
--   <ns>:held:{scope}            "<index>:<id>" -> the planned job that
--                                holds the memory
--   <ns>:pjob:{scope}:<id>       one planned job: its sources and whether
--                                it was delivered to Kafka
--   <ns>:pjobs:{scope}:<policy>  planned jobs still open, by window
--   <ns>:plan:{scope}            the scope's planning status
-- The planner's functions reach the keys of a scope's records and jobs by
-- name; all of them share the scope's hash tag, so one slot holds them.

-- Every change of this file bumps LIB_VERSION (and DQ_FUNCTIONS_VERSION in
-- dq_store.c): a server keeps a library of the same version as it is.
local LIB_VERSION = '11'
local TERMINAL = {completed = true, dead = true, cancelled = true,
                  duplicate = true, superseded = true}

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

-- Small counts as strings: attempts and epochs are written and answered
-- without formatting a number, in Lua or in Redis.
local NUM = {}
for i = 0, 99 do NUM[i] = '' .. i end
local function n2s(v) return NUM[v] or tostring(v) end

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
-- claim_decide() reads and decides, with claim's arguments at
-- args[o + 1..o + 9]: it returns a refusal (the reply), or nil and the
-- claim to write (claim_write). run() writes the claim together with the
-- effect's settle, in one write of the state hash.
local function refuse(status, state, attempts, epoch, ref)
  return {status, s(state), n2s(attempts), n2s(epoch), ref}
end

local function claim_decide(job, idem, args, o)
  local at = args[o + 1] -- written as given: no number formatting
  local now = tonumber(at)
  local kind, id, retention = args[o + 4], args[o + 6], args[o + 7]
  local msg = args[o + 8] or ''
  local st = redis.call('HMGET', job, 'state', 'attempts', 'epoch',
                        'lease_until', 'duplicate_of', 'result_memory_id',
                        'claimed_msg', 'not_before')
  local state = st[1]
  local attempts, epoch = tonumber(st[2]) or 0, tonumber(st[3]) or 0
  if state and TERMINAL[state] then
    return refuse('terminal', state, attempts, epoch, s(st[5]) .. s(st[6]))
  end
  if idem then
    local first = redis.call('SET', idem, id, 'NX', 'PX', retention, 'GET')
    if first and first ~= id then
      redis.call('HSET', job, 'state', 'duplicate', 'duplicate_of', first,
                 'kind', kind, 'updated_at', at)
      redis.call('HSETNX', job, 'created_at', at)
      redis.call('PEXPIRE', job, retention)
      return {'duplicate', first, n2s(attempts), n2s(epoch), first}
    end
  end
  local same = msg ~= '' and st[7] == msg
  local live = state == 'in_progress' and (tonumber(st[4]) or 0) > now
  if not same then
    local copy = args[o + 9] ~= '-1' and tonumber(args[o + 9]) or -1
    if copy >= 0 and copy < attempts then
      return refuse('stale', state, attempts, epoch, '')
    end
    if live then
      return refuse('busy', state, attempts, epoch, s(st[4]))
    end
  end
  if state == 'retry_wait' and (tonumber(st[8]) or 0) > now then
    return refuse('not_due', state, attempts, epoch, s(st[8]))
  end
  if attempts >= tonumber(args[o + 5]) then
    return refuse('exhausted', state, attempts, epoch, '')
  end
  -- HMGET answers a missing field with false, never nil.
  return nil, {existed = state ~= false, state = state, at = at, now = now,
               kind = kind, attempts = n2s(attempts + 1),
               epoch = n2s(epoch + 1), worker = args[o + 3],
               lease = args[o + 2], msg = msg, live = live}
end

-- What claim answers for a claim that claim_decide() took.
local function claimed(c)
  return {'claimed', s(c.state), c.attempts, c.epoch,
          c.live and 'took_over_live_lease' or ''}
end

-- Writes a claim that claim_decide() took.
local function claim_write(job, c)
  local lease_until = c.now + tonumber(c.lease)
  if c.existed then
    redis.call('HSET', job, 'state', 'in_progress', 'kind', c.kind,
               'attempts', c.attempts, 'epoch', c.epoch,
               'lease_until', lease_until, 'claimed_by', c.worker,
               'claimed_msg', c.msg, 'updated_at', c.at, 'started_at', c.at)
    redis.call('HSETNX', job, 'created_at', c.at)
    redis.call('PERSIST', job)
  else
    -- The common case, a first claim: one write, and no TTL to clear.
    redis.call('HSET', job, 'state', 'in_progress', 'kind', c.kind,
               'attempts', c.attempts, 'epoch', c.epoch,
               'lease_until', lease_until, 'claimed_by', c.worker,
               'claimed_msg', c.msg, 'updated_at', c.at, 'created_at', c.at,
               'started_at', c.at)
  end
end

local function claim(keys, args)
  local refusal, c = claim_decide(keys[1], keys[2], args, 0)
  if refusal then return refusal end
  claim_write(keys[1], c)
  return claimed(c)
end

-- The claim half of run() and claim_llm(): ARGV[2..10] are claim's
-- arguments, and keys[idem_at] is the idempotency key when ARGV[1] is '1'.
local function claim_part(keys, args, idem_at)
  return claim_decide(keys[1], args[1] == '1' and keys[idem_at] or nil,
                      args, 1)
end

-- A terminal state keeps its own time (completed_at and the like) and no
-- claim: lease_until, claimed_msg and updated_at go, which keeps the
-- retained hash small. retention is in ms, as a string or a number.
--
-- c is the claim run() took and has not written yet: the claim and the
-- terminal state then go in one write, and a first claim has no claim
-- fields to delete.
local function finish(job, retention, fields, c)
  if c and not c.existed then
    redis.call('HSET', job, 'kind', c.kind, 'attempts', c.attempts,
               'epoch', c.epoch, 'claimed_by', c.worker, 'started_at', c.at,
               'created_at', c.at, unpack(fields))
  else
    if c then
      redis.call('HSET', job, 'kind', c.kind, 'attempts', c.attempts,
                 'epoch', c.epoch, 'claimed_by', c.worker,
                 'started_at', c.at, unpack(fields))
      redis.call('HSETNX', job, 'created_at', c.at)
    else
      redis.call('HSET', job, unpack(fields))
    end
    redis.call('HDEL', job, 'lease_until', 'claimed_msg', 'updated_at')
  end
  redis.call('PEXPIRE', job, retention)
end

-- Reads the sources of a compression, keys[first..] with ids: their texts
-- and created_at times in that order, or a rejection.
local function load_sources(keys, first, ids, want_type, text_field)
  local texts, created = {}, {}
  for i = first, #keys do
    local n = i - first + 1
    local h = redis.call('HMGET', keys[i], 'status', 'type', text_field,
                         'created_at')
    if not h[1] then
      return nil, nil, {'rejected', 'decay.compress.source_missing',
                        'source ' .. ids[n] .. ' does not exist'}
    end
    if h[1] ~= 'active' then
      return nil, nil, {'rejected', 'decay.compress.source_inactive',
                        'source ' .. ids[n] .. ' is ' .. h[1] ..
                        ', not active'}
    end
    if want_type and h[2] ~= want_type then
      return nil, nil, {'rejected', 'decay.compress.source_wrong_type',
                        'source ' .. ids[n] .. ' is of type ' .. s(h[2]) ..
                        ', not ' .. want_type}
    end
    texts[n] = s(h[3])
    created[n] = tonumber(h[4]) or 0
  end
  return texts, created, nil
end

-- Sources in the order they were remembered; ties by id.
local function by_created(a, b)
  if a.created ~= b.created then return a.created < b.created end
  return a.id < b.id
end

-- The sources as items {id, text, created}, in the order they were
-- remembered.
local function ordered_items(ids, texts, created)
  local items = {}
  for i, id in ipairs(ids) do
    items[i] = {id = id, text = texts[i], created = created[i]}
  end
  table.sort(items, by_created)
  return items
end

-- ids, texts in the order they were remembered. Sources usually arrive in
-- that order already, and are then taken as they are.
local function in_order(ids, texts, created)
  local sorted = true
  for i = 2, #ids do
    local a, b = created[i - 1], created[i]
    if a > b or (a == b and ids[i - 1] >= ids[i]) then
      sorted = false
      break
    end
  end
  if sorted then return ids, texts end
  local o, t = {}, {}
  for i, it in ipairs(ordered_items(ids, texts, created)) do
    o[i], t[i] = it.id, it.text
  end
  return o, t
end

-- A JSON array of ids. Ids of letters, digits and -_.: come out as cjson
-- writes them, without a call into it; any other id goes through cjson.
local function ids_json(ids)
  for _, id in ipairs(ids) do
    if string.find(id, '[^%w%-_.:]') then return cjson.encode(ids) end
  end
  return '["' .. table.concat(ids, '","') .. '"]'
end

-- Which index a source of a job of this kind sits in, and the prefix of
-- its hold in the held hash.
local INDEX_OF = {candidate_compression = 'candidate',
                  episode_compression = 'episode',
                  expired_principle_review = 'principle'}

-- Takes the settled sources out of the planner's index and releases their
-- holds: they can never be planned again.
local function unindex(idx, held, which, ids)
  redis.call('ZREM', idx, unpack(ids))
  local fields = {}
  for i, id in ipairs(ids) do fields[i] = which .. ':' .. id end
  redis.call('HDEL', held, unpack(fields))
end

-- compressed() and settle() take keys: job, target, index, held, then the
-- sources from keys[first]; ids: the sources' ids; p: epoch (a number),
-- now, retention_ms, kind, job_id, method, scope, result_id; c: the claim
-- of run(), unwritten (then there is no epoch to check).

-- The end of a compression, with its summary p.result_id written: each
-- source compressed into it, out of the planner's index, and the job
-- completed.
local function compressed(keys, first, ids, p, c)
  for i = first, #keys do
    redis.call('HSET', keys[i], 'status', 'compressed', 'compressed_into',
               p.result_id, 'compressed_at', p.now)
  end
  unindex(keys[3], keys[4], INDEX_OF[p.kind], ids)
  finish(keys[1], p.retention, {'state', 'completed', 'completed_at', p.now,
                                'result_memory_id', p.result_id}, c)
  return {'ok', p.result_id}
end

-- The summary every source of keys[first..] was compressed into, when
-- all of them were; else nil.
local function compressed_into(keys, first)
  local into = nil
  for i = first, #keys do
    local h = redis.call('HMGET', keys[i], 'status', 'compressed_into')
    if h[1] ~= 'compressed' then return nil end
    into = into or s(h[2])
  end
  return into
end

-- The settle of a compression or a review. target is the summary memory
-- (compressions) or the scope's review stream (expired_principle_review);
-- index and held are the planner's index of the sources' kind and the
-- scope's holds. The effect, the index update and
-- `completed` are one step. A compression whose sources were all
-- compressed already, by other jobs, has nothing left to do: it is settled
-- `superseded` (reply ok, '', 'superseded'), not rejected.
local function settle(keys, first, ids, p, c)
  local job, target, idx, held = keys[1], keys[2], keys[3], keys[4]
  local now, kind = p.now, p.kind -- now: written as given

  if not c then
    local bad = fence(job, p.epoch)
    if bad then return bad end
  end

  if kind == 'expired_principle_review' then
    local _, _, rej = load_sources(keys, first, ids, nil, 'claim')
    if rej then return rej end
    local entry = redis.call('XADD', target, '*', 'job_id', p.job_id,
                             'scope', p.scope, 'principle_ids',
                             cjson.encode(ids), 'opened_at', now)
    for i = first, #keys do
      redis.call('HSET', keys[i], 'review_state', 'open', 'review_job',
                 p.job_id, 'review_entry', entry)
    end
    unindex(idx, held, 'principle', ids)
    finish(job, p.retention, {'state', 'completed', 'completed_at', now,
                              'result_review_id', entry}, c)
    return {'ok', entry}
  end

  local want, text_field = 'candidate', 'claim'
  if kind == 'episode_compression' then want, text_field = nil, 'content' end
  local texts, created, rej = load_sources(keys, first, ids, want,
                                           text_field)
  if rej then
    if rej[2] == 'decay.compress.source_inactive' then
      local into = compressed_into(keys, first)
      if into then
        unindex(idx, held, INDEX_OF[kind], ids)
        finish(job, p.retention, {'state', 'superseded', 'superseded_at',
                                  now, 'superseded_by', into}, c)
        return {'ok', '', 'superseded'}
      end
    end
    return rej
  end
  local ordered
  ordered, texts = in_order(ids, texts, created)
  redis.call('HSET', target, 'id', p.result_id, 'scope', p.scope,
             'type', 'summary', 'status', 'active',
             'claim', table.concat(texts, '\n'), 'created_at', now,
             'source_kind', kind, 'source_ids', ids_json(ordered),
             'job_id', p.job_id, 'method', p.method)
  return compressed(keys, first, ids, p, c)
end

-- complete(KEYS: job, target, index, held, sources...;
--          ARGV: epoch, now, retention_ms, kind, job_id, method, scope,
--                result_id, source ids...)
local function complete(keys, args)
  return settle(keys, 5, {unpack(args, 9)},
                {epoch = tonumber(args[1]), now = args[2],
                 retention = args[3], kind = args[4], job_id = args[5],
                 method = args[6], scope = args[7], result_id = args[8]})
end

-- run(KEYS: job, target, index, held [, idem], sources...;
--     ARGV: has_idem, now, lease_ms, worker, kind, max_attempts, job_id,
--           retention_ms, msg, copy_attempts, method, scope, result_id,
--           source ids...)
-- A deterministic job whole, in one step: the claim (every refusal of
-- claim, answered as claim answers it) and, once claimed, the complete.
-- A job whose handler does nothing but the effect needs no round trip
-- between the two, and the step is as atomic as each half (G4): the
-- attempt is counted in the same step that applies the effect. Replies:
--   completed, state_before, attempts, epoch, result, 'superseded' | ''
--   rejected, state_before, attempts, epoch, code, message
--       (the attempt stays counted and the claim held, so that the caller
--        dead-letters the job with this epoch)
--   or any refusal of claim, in claim's shape.
local function run(keys, args)
  local first = args[1] == '1' and 6 or 5
  local refusal, c = claim_part(keys, args, 5)
  if refusal then return refusal end
  local p = {now = args[2], retention = args[8], kind = args[5],
             job_id = args[7], method = args[11], scope = args[12],
             result_id = args[13]}
  -- settle writes the claim with the settle. When it does not settle,
  -- the claim is written here, so that the attempt stays counted: a
  -- rejection, or an error of the effect's commands (a key of the wrong
  -- type), is answered as a rejection that the caller dead-letters with
  -- this epoch. settle reads every key before it writes any, so such an
  -- error writes nothing of the effect.
  local ok, done = pcall(settle, keys, first, {unpack(args, 14)}, p, c)
  local before = s(c.state)
  if ok and done[1] == 'ok' then
    return {'completed', before, c.attempts, c.epoch, done[2],
            done[3] or ''}
  end
  claim_write(keys[1], c)
  if not ok then
    local msg = type(done) == 'table' and done.err or tostring(done)
    return {'rejected', before, c.attempts, c.epoch,
            'decay.store.command_error', 'redis: ' .. s(msg)}
  end
  return {'rejected', before, c.attempts, c.epoch, s(done[2]), s(done[3])}
end

-- The digest of a compression's sources as a prompt saw them: each one's
-- id, status, text and created_at, in prompt order. complete_llm compares
-- it with the one claim_llm read, so a summary is written only over the
-- sources it summarizes.
local function sources_digest(keys, first, items, text_field)
  local parts = {}
  for i, it in ipairs(items) do
    parts[i] = it.id .. '\0' .. it.text .. '\0' .. tostring(it.created)
  end
  return redis.sha1hex(text_field .. '\0' .. table.concat(parts, '\0'))
end

local function llm_sources(kind, keys, first, ids)
  local want, text_field = 'candidate', 'claim'
  if kind == 'episode_compression' then want, text_field = nil, 'content' end
  local texts, created, rej = load_sources(keys, first, ids, want,
                                           text_field)
  if rej then return nil, nil, rej end
  local items = ordered_items(ids, texts, created)
  return items, sources_digest(keys, first, items, text_field), nil
end

-- claim_llm(KEYS: job, nonce [, idem], sources...;
--           ARGV: has_idem, now, lease_ms, worker, kind, max_attempts,
--                 job_id, retention_ms, msg, copy_attempts, nonce_until,
--                 source ids...)
-- The claim of an llm_summary job whose attestation the consumer verified
-- (G12): the claim (every refusal of claim, in claim's shape), then in the
-- same step its attestation's nonce, taken with SET NX (the job's own
-- retries find their own id there; any other job is refused), then its
-- sources, read for the prompt. Replies:
--   claimed, state_before, attempts, epoch, took_over, digest, n,
--       then n times id, text, created_at (prompt order)
--   rejected, state_before, attempts, epoch, code, message
--       (the attempt is counted and the claim held: the caller
--        dead-letters the job with this epoch; a replayed nonce is
--        decay.attest.replayed)
--   terminal, 'superseded', ...: other jobs compressed every source
local function claim_llm(keys, args)
  local first = args[1] == '1' and 4 or 3
  local refusal, c = claim_part(keys, args, 3)
  if refusal then return refusal end
  local r, kind, id = claimed(c), args[5], args[7]
  local prev = redis.call('SET', keys[2], id, 'NX', 'PXAT', args[11], 'GET')
  if prev and prev ~= id then
    claim_write(keys[1], c)
    return {'rejected', r[2], r[3], r[4], 'decay.attest.replayed',
            'the attestation nonce was used by job ' .. prev}
  end
  local ids = {unpack(args, 12)}
  local items, digest, rej = llm_sources(kind, keys, first, ids)
  if rej then
    local into = rej[2] == 'decay.compress.source_inactive' and
                 compressed_into(keys, first)
    if into then
      -- Other jobs compressed every source: nothing left to summarize.
      finish(keys[1], args[8],
             {'state', 'superseded', 'superseded_at', args[2],
              'superseded_by', into}, c)
      return {'terminal', 'superseded', r[3], r[4], into}
    end
    claim_write(keys[1], c)
    return {'rejected', r[2], r[3], r[4], rej[2], rej[3]}
  end
  claim_write(keys[1], c)
  local out = {'claimed', r[2], r[3], r[4], r[5], digest, tostring(#items)}
  for _, it in ipairs(items) do
    out[#out + 1] = it.id
    out[#out + 1] = it.text
    out[#out + 1] = tostring(it.created)
  end
  return out
end

-- complete_llm(KEYS: job, target, index, held, sources...;
--              ARGV: epoch, now, retention_ms, kind, job_id, scope,
--                    result_id, digest, content, model, fingerprint,
--                    prompt_tokens, completion_tokens, operator, key_id,
--                    source ids...)
-- Writes an LLM summary as complete writes a concatenation, in one step
-- fenced by epoch: the summary memory with its provenance, the sources
-- compressed into it, the planner's index, `completed`. It first re-reads
-- the sources: unless they are still active and their digest is the one
-- the prompt was built from, nothing is written (rejected,
-- decay.compress.source_changed).
local function complete_llm(keys, args)
  local job, target = keys[1], keys[2]
  local p = {epoch = tonumber(args[1]), now = args[2], retention = args[3],
             kind = args[4], result_id = args[7]}
  local kind, job_id, now = p.kind, args[5], p.now
  local scope, result_id, want = args[6], p.result_id, args[8]
  local ids = {unpack(args, 16)}
  local bad = fence(job, p.epoch)
  if bad then return bad end
  local items, digest, rej = llm_sources(kind, keys, 5, ids)
  if rej or digest ~= want then
    return {'rejected', 'decay.compress.source_changed',
            rej and s(rej[3]) or
            'a source changed between the prompt and the settle'}
  end
  local ordered = {}
  for i, it in ipairs(items) do ordered[i] = it.id end
  redis.call('HSET', target, 'id', result_id, 'scope', scope,
             'type', 'summary', 'status', 'active', 'claim', args[9],
             'created_at', now, 'source_kind', kind,
             'source_ids', cjson.encode(ordered), 'job_id', job_id,
             'method', 'llm_summary', 'model', args[10],
             'system_fingerprint', args[11], 'prompt_tokens', args[12],
             'completion_tokens', args[13], 'operator', args[14],
             'key_id', args[15])
  return compressed(keys, 5, ids, p, nil)
end

-- release(KEYS: job; ARGV: epoch, now, not_before, code)
-- Hands a claimed job back without spending its attempt: the backend, not
-- the job, was at fault (an LLM circuit opened). The attempt the claim
-- counted is given back, and the job waits until not_before like a retry.
local function release(keys, args)
  local epoch, now = tonumber(args[1]), tonumber(args[2])
  local bad = fence(keys[1], epoch)
  if bad then return bad end
  local attempts = tonumber(redis.call('HGET', keys[1], 'attempts')) or 1
  redis.call('HSET', keys[1], 'state', 'retry_wait', 'lease_until', 0,
             'attempts', math.max(attempts - 1, 0), 'not_before', args[3],
             'last_error', args[4], 'updated_at', now)
  return {'ok', tostring(math.max(attempts - 1, 0))}
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

-- supersede(KEYS: job; ARGV: now, retention_ms, by)
-- A consumer found a newer job over the same sources queued behind this
-- one before it started: it ends `superseded` (by names the newer job),
-- with its epoch bumped so that no old claim can settle it. A terminal job
-- is left as it is (terminal); one running under a live lease too (busy).
local function supersede(keys, args)
  local now = tonumber(args[1])
  local st = redis.call('HMGET', keys[1], 'state', 'epoch', 'lease_until')
  if st[1] and TERMINAL[st[1]] then
    return {'terminal', st[1], s(st[2])}
  end
  if st[1] == 'in_progress' and (tonumber(st[3]) or 0) > now then
    return {'busy', st[1], s(st[2])}
  end
  redis.call('HINCRBY', keys[1], 'epoch', 1)
  redis.call('HSETNX', keys[1], 'created_at', args[1])
  finish(keys[1], tonumber(args[2]),
         {'state', 'superseded', 'superseded_at', args[1], 'superseded_by',
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

-- The planner's indexes. A memory is indexed when the planner may propose
-- it: an active candidate (by created_at), an active episode (by
-- created_at), or an active principle that no review holds yet (by
-- expires_at). Returns the index key to be in and its score, or nil and
-- why it is in none (nil reason: nothing to index, it is simply not due
-- for decay).
local function index_target(h, store, idx_a, idx_b)
  local status, typ, created, expires, review = h[1], h[2], h[3], h[4], h[5]
  if status ~= 'active' then return nil, nil end
  local key, field, value
  if store == 'ep' then
    key, field, value = idx_a, 'created_at', created
  elseif typ == 'candidate' then
    key, field, value = idx_a, 'created_at', created
  elseif typ == 'principle' and not review then
    key, field, value = idx_b, 'expires_at', expires
  else
    return nil, nil
  end
  if not value then
    -- A principle without expires_at never expires: nothing to index.
    if field == 'expires_at' then return nil, nil end
    return nil, 'no_' .. field
  end
  if not string.match(value, '^%d+$') or #value > 15 then
    return nil, 'bad_' .. field
  end
  return key, tonumber(value)
end

-- Puts one record's index entries where index_target says. Returns the
-- action (added | fixed | unchanged | removed | none) and, when the
-- record cannot be indexed although it should, why (skipped).
local function index_record(rec, store, id, idx_a, idx_b)
  local h = redis.call('HMGET', rec, 'status', 'type', 'created_at',
                       'expires_at', 'review_state')
  local key, score = index_target(h, store, idx_a, idx_b)
  local why = nil
  if not key then why = score end
  local was = {}
  was[idx_a] = redis.call('ZSCORE', idx_a, id)
  if idx_b then was[idx_b] = redis.call('ZSCORE', idx_b, id) end
  local removed = false
  for k, v in pairs(was) do
    if v and k ~= key then
      redis.call('ZREM', k, id)
      removed = true
    end
  end
  if key then
    if was[key] and tonumber(was[key]) == score and not removed then
      return {'unchanged', ''}
    end
    redis.call('ZADD', key, score, id)
    return {(was[key] or removed) and 'fixed' or 'added', ''}
  end
  if why then return {'skipped', why} end
  return {removed and 'removed' or 'none', ''}
end

-- put(KEYS: record, index_a [, index_b]; ARGV: store, id, scope,
--     field, value...)
-- Writes (replaces) a memory (store 'mem': index_a the candidates',
-- index_b the principles') or an episode (store 'ep': index_a the
-- episodes') and its index entry, in one step. Reply as index_record's.
local function put(keys, args)
  local rec = keys[1]
  redis.call('DEL', rec)
  local kv = {'id', args[2], 'scope', args[3]}
  for i = 4, #args do kv[#kv + 1] = args[i] end
  redis.call('HSET', rec, unpack(kv))
  return index_record(rec, args[1], args[2], keys[2], keys[3])
end

-- index(KEYS: record, index_a [, index_b]; ARGV: store, id)
-- Re-derives one record's index entry from the record (decayctl memory
-- reindex); a record that is gone leaves every index.
local function index_one(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 then
    local n = redis.call('ZREM', keys[2], args[2])
    if keys[3] then n = n + redis.call('ZREM', keys[3], args[2]) end
    return {n > 0 and 'removed' or 'none', 'gone'}
  end
  return index_record(keys[1], args[1], args[2], keys[2], keys[3])
end

-- A planned job's id: a ULID whose time is the window start and whose 80
-- random bits are the SHA-1 of (scope, policy, window, chunk). Every
-- planner derives the same id for the same proposal (G13).
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function plan_id(scope, policy, window, chunk)
  local out = {}
  local t = window
  for i = 10, 1, -1 do
    local d = t % 32
    out[i] = CROCKFORD:sub(d + 1, d + 1)
    t = (t - d) / 32
  end
  local hex = redis.sha1hex(scope .. '\n' .. policy .. '\n' ..
                            tostring(window) .. '\n' .. tostring(chunk))
  for g = 0, 3 do
    local v = tonumber(hex:sub(g * 5 + 1, g * 5 + 5), 16)
    for i = 4, 1, -1 do
      local d = v % 32
      out[10 + g * 4 + i] = CROCKFORD:sub(d + 1, d + 1)
      v = (v - d) / 32
    end
  end
  return table.concat(out)
end

local RECORD_OF = {candidate = 'mem', principle = 'mem', episode = 'ep'}

-- A source id a job can name (dq_job_source_id_valid).
local function good_id(id)
  return #id >= 1 and #id <= 255 and not string.find(id, '[%s%c{}]')
end

-- plan(KEYS: index, held, status, open;
--      ARGV: ns, scope, policy, kind, interval_ms, min_age_ms,
--            min_sources, max_sources, method, scan_max, retention_ms)
-- One scope, one policy, one pass. The window is Redis TIME rounded down
-- to interval_ms. Memories of the index due in it (score at most window
-- start - min_age) and held by no open planned job are chunked, oldest
-- first, max_sources a job, a last chunk of fewer than min_sources left to
-- wait; each chunk becomes a planned job whose id derives from (scope,
-- policy, window, chunk number) and which holds its sources until it
-- ends. Planned jobs that ended release what they still hold; those never
-- delivered to Kafka are returned again to be published. Index entries of
-- memories that are gone, inactive or unusable are dropped and counted.
-- Reply: {window, now, next_due, {open, released, republished, held,
--         gone, stale, bad, due, proposed, debt, jobs},
--         {job_id, idem_key, kind, method, created_at, source ids...}...}
local function plan(keys, args)
  local idx, held, status, open = keys[1], keys[2], keys[3], keys[4]
  local ns, scope, policy, kind = args[1], args[2], args[3], args[4]
  local interval, min_age = tonumber(args[5]), tonumber(args[6])
  local min_n, max_n = tonumber(args[7]), tonumber(args[8])
  local method, scan_max = args[9], tonumber(args[10])
  local retention = tonumber(args[11])
  local which = INDEX_OF[kind]
  local tag = '{' .. scope .. '}'
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local window = now - now % interval
  local cutoff = window - min_age
  local c = {open = 0, released = 0, republished = 0, held = 0, gone = 0,
             stale = 0, bad = 0, due = 0, proposed = 0, debt = 0, jobs = 0}
  local jobs = {}

  local function job_reply(jid, p)
    local r = {jid, p[1], kind, p[2], p[3]}
    for _, id in ipairs(cjson.decode(p[4])) do r[#r + 1] = id end
    jobs[#jobs + 1] = r
    c.jobs = c.jobs + 1
  end

  -- Planned jobs still open: ended ones release their holds.
  local opened = redis.call('ZRANGE', open, 0, -1, 'WITHSCORES')
  for i = 1, #opened, 2 do
    local jid, pw = opened[i], tonumber(opened[i + 1])
    local pkey = ns .. ':pjob:' .. tag .. ':' .. jid
    local p = redis.call('HMGET', pkey, 'idempotency_key', 'method',
                         'created_at', 'sources', 'published')
    local st = redis.call('HGET', ns .. ':job:' .. tag .. ':' .. jid,
                          'state')
    if not p[4] or (st and TERMINAL[st]) or
       (not st and pw < now - retention) then
      -- Ended (or its state outlived its retention): what it did not
      -- compress is free to plan again.
      if p[4] then
        for _, id in ipairs(cjson.decode(p[4])) do
          local f = which .. ':' .. id
          if redis.call('HGET', held, f) == jid then
            redis.call('HDEL', held, f)
          end
        end
      end
      redis.call('DEL', pkey)
      redis.call('ZREM', open, jid)
      c.released = c.released + 1
    elseif not st and p[5] ~= '1' then
      job_reply(jid, p)
      c.republished = c.republished + 1
    else
      c.open = c.open + 1
    end
  end

  -- Due memories, oldest first (ties by id, as ZRANGEBYSCORE orders).
  local due = redis.call('ZRANGEBYSCORE', idx, '-inf', cutoff, 'LIMIT', 0,
                         scan_max)
  local free = {}
  for i = 1, #due, 500 do
    local fields = {}
    for j = i, math.min(i + 499, #due) do
      fields[#fields + 1] = which .. ':' .. due[j]
    end
    local holders = redis.call('HMGET', held, unpack(fields))
    for j = 1, #fields do
      local id = due[i + j - 1]
      if holders[j] then
        c.held = c.held + 1
      elseif not good_id(id) then
        redis.call('ZREM', idx, id)
        c.bad = c.bad + 1
      else
        local h = redis.call('HMGET', ns .. ':' .. RECORD_OF[which] .. ':' ..
                             tag .. ':' .. id, 'status', 'type',
                             'review_state')
        if not h[1] then
          redis.call('ZREM', idx, id)
          c.gone = c.gone + 1
        elseif h[1] ~= 'active' or
               (which ~= 'episode' and h[2] ~= which) or
               (which == 'principle' and h[3]) then
          redis.call('ZREM', idx, id)
          c.stale = c.stale + 1
        else
          free[#free + 1] = id
        end
      end
    end
  end
  c.due = #free

  -- Chunks, numbered on from the last of this window.
  local chunk = 0
  local last = redis.call('HGET', status, 'chunk:' .. policy)
  if last then
    local w, n = string.match(last, '^(%d+):(%d+)$')
    if tonumber(w) == window then chunk = tonumber(n) end
  end
  local pos = 1
  while #free - pos + 1 >= min_n and #free - pos + 1 > 0 do
    local take = math.min(max_n, #free - pos + 1)
    local src, hold = {}, {}
    local jid = plan_id(scope, policy, window, chunk)
    for j = pos, pos + take - 1 do
      src[#src + 1] = free[j]
      hold[#hold + 1] = which .. ':' .. free[j]
      hold[#hold + 1] = jid
    end
    local idem = 'plan/' .. policy .. '/' .. tostring(window) .. '/' ..
                 tostring(chunk)
    local p = {idem, method, tostring(now), cjson.encode(src)}
    redis.call('HSET', ns .. ':pjob:' .. tag .. ':' .. jid,
               'idempotency_key', p[1], 'method', p[2], 'created_at', p[3],
               'sources', p[4], 'published', '0', 'policy', policy,
               'kind', kind, 'window', window, 'chunk', chunk)
    redis.call('ZADD', open, window, jid)
    redis.call('HSET', held, unpack(hold))
    job_reply(jid, p)
    c.proposed = c.proposed + take
    chunk = chunk + 1
    pos = pos + take
  end
  c.debt = #free - pos + 1
  if #due == scan_max then
    -- More are due than one pass looks at: the rest wait for the next.
    c.debt = c.debt + redis.call('ZCOUNT', idx, '-inf', cutoff) - #due
  end

  -- When the next memory comes due: the first window it is due in.
  local next_due = ''
  if c.debt > 0 then
    next_due = tostring(window + interval)
  else
    local nx = redis.call('ZRANGEBYSCORE', idx, '(' .. cutoff, '+inf',
                          'WITHSCORES', 'LIMIT', 0, 1)
    if nx[2] then
      local at = tonumber(nx[2]) + min_age
      if at % interval ~= 0 then at = at - at % interval + interval end
      next_due = tostring(at)
    end
  end
  redis.call('HSET', status, 'scope', scope, 'last_run', now,
             'chunk:' .. policy, tostring(window) .. ':' .. tostring(chunk),
             policy .. ':last_run', now, policy .. ':window', window,
             policy .. ':next_due', next_due, policy .. ':due', c.due,
             policy .. ':proposed', c.proposed, policy .. ':debt', c.debt,
             policy .. ':held', c.held + c.proposed)
  local counts = {}
  for _, k in ipairs({'open', 'released', 'republished', 'held', 'gone',
                      'stale', 'bad', 'due', 'proposed', 'debt', 'jobs'}) do
    counts[#counts + 1] = tostring(c[k])
  end
  local reply = {tostring(window), tostring(now), next_due, counts}
  for _, j in ipairs(jobs) do reply[#reply + 1] = j end
  return reply
end

-- plan_published(KEYS: planned jobs...) marks planned jobs delivered to
-- Kafka, so that no later pass publishes them again. Reply: how many.
local function plan_published(keys)
  local n = 0
  for _, k in ipairs(keys) do
    if redis.call('EXISTS', k) == 1 then
      redis.call('HSET', k, 'published', '1')
      n = n + 1
    end
  end
  return n
end

local function version()
  return LIB_VERSION
end

redis.register_function('decayq_claim', claim)
redis.register_function('decayq_complete', complete)
redis.register_function('decayq_run', run)
redis.register_function('decayq_retry', retry)
redis.register_function('decayq_claim_llm', claim_llm)
redis.register_function('decayq_complete_llm', complete_llm)
redis.register_function('decayq_release', release)
redis.register_function('decayq_dead', dead)
redis.register_function('decayq_cancel', cancel)
redis.register_function('decayq_renew', renew)
redis.register_function('decayq_supersede', supersede)
redis.register_function('decayq_put', put)
redis.register_function('decayq_index', index_one)
redis.register_function('decayq_plan', plan)
redis.register_function('decayq_plan_published', plan_published)
redis.register_function('decayq_replay', replay)
redis.register_function{function_name = 'decayq_replay_dry',
                        callback = replay_dry, flags = {'no-writes'}}
redis.register_function{function_name = 'decayq_version', callback = version,
                        flags = {'no-writes'}}
