"""The Redis side of a batch: its keys and the Lua scripts that move its state atomically.

A batch ``b`` keeps, under a prefix (``chunking:batch`` by default):

- ``<prefix>:b``: a hash of its counters and state: ``added``, ``total`` (once sealed),
  ``done``, ``succeeded``, ``failed`` and ``failed:<kind>``, ``state`` (``open``, ``sealed``,
  ``firing``, ``fired``), the times (``created_ms``, ``sealed_ms``, ``completed_ms``,
  ``cancelled_ms``), ``name``, ``callbacks`` (JSON) and ``parent`` (JSON, for a child batch);
- ``<prefix>:b:done``: a bitmap, one bit per member ordinal, set when the member's outcome is
  recorded: the guard that makes recording idempotent (a member counted twice moves nothing);
- ``<prefix>:b:failures``: a hash, failed ordinal -> ``{"message_id", "kind", "reason"}``;
  it is also the set of failed members (a separate bitmap would say the same thing again);
- ``<prefix>:recent``: a sorted set, batch id -> created (ms), for listing recent batches.

Every script keeps one rule: a tally moves only together with the bit that guards it, and the
move to ``firing`` happens once, in the call that completes the batch, so exactly one caller
learns it must enqueue the callbacks. While ``firing``, any call that touches the batch is told
to fire again (a caller that died mid-enqueue is replaced by the next one: a redelivered last
member, a repeated seal); ``fired`` is final.
"""

from __future__ import annotations

#: Answers of the scripts: the batch is unknown, or the ordinal is not one of its members.
UNKNOWN, NOT_A_MEMBER = -1, -2
#: The call changed nothing (a duplicate, or the batch had completed already).
UNCHANGED = 0
#: The call was recorded; the batch is not complete.
RECORDED = 1
#: The batch is complete: the caller enqueues the callbacks, then calls ``FIRED``.
FIRE = 2

# KEYS: meta, recent. ARGV: id, name, callbacks (JSON), parent (JSON or ""), now (ms), how
# many batches the listing keeps (the oldest beyond are dropped from it, not deleted).
CREATE = """
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "name", ARGV[2], "callbacks", ARGV[3], "state", "open",
  "added", 0, "done", 0, "succeeded", 0, "failed", 0, "created_ms", ARGV[5])
if ARGV[4] ~= "" then redis.call("HSET", KEYS[1], "parent", ARGV[4]) end
redis.call("ZADD", KEYS[2], ARGV[5], ARGV[1])
redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -1 - tonumber(ARGV[6]))
return 1
"""

# KEYS: meta. ARGV: count. The end of the range reserved (its start is end - count), or
# UNKNOWN, or NOT_A_MEMBER when the batch no longer takes members (sealed or cancelled).
RESERVE = """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return -1 end
if state ~= "open" then return -2 end
return redis.call("HINCRBY", KEYS[1], "added", ARGV[1])
"""

# KEYS: meta. ARGV: upto. Raise ``added`` to ``upto`` (members numbered by the caller, as a
# chunked run numbers them from its row): repeating it changes nothing.
EXTEND = """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return -1 end
if state ~= "open" then return -2 end
if tonumber(ARGV[1]) > tonumber(redis.call("HGET", KEYS[1], "added")) then
  redis.call("HSET", KEYS[1], "added", ARGV[1])
end
return 1
"""

# The completion check every script that can complete a batch ends with.
_COMPLETE = """
local function complete(meta, now)
  local total = redis.call("HGET", meta, "total")
  if total and tonumber(redis.call("HGET", meta, "done")) >= tonumber(total) then
    redis.call("HSET", meta, "state", "firing", "completed_ms", now)
    return 2
  end
  return 1
end
"""

# KEYS: meta. ARGV: total ("" for the members added so far), now (ms). Sealing again, with
# another total, is allowed until the batch completes (a chunked run's last chunk redone).
SEAL = (
    _COMPLETE
    + """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return -1 end
if state == "firing" then return 2 end
if state == "fired" then return 0 end
local total = ARGV[1]
if total == "" then total = redis.call("HGET", KEYS[1], "added") end
redis.call("HSET", KEYS[1], "total", total, "added", total, "state", "sealed")
redis.call("HSETNX", KEYS[1], "sealed_ms", ARGV[2])
return complete(KEYS[1], ARGV[2])
"""
)

# Records one member: the answer of SETTLE. KEYS as SETTLE's.
_SETTLE_ONE = (
    _COMPLETE
    + """
local function settle(ordinal, kind, message_id, reason, now)
  local state = redis.call("HGET", KEYS[1], "state")
  if not state then return -1 end
  if state == "firing" then return 2 end
  if state == "fired" then return 0 end
  local total = redis.call("HGET", KEYS[1], "total")
  if total and ordinal >= tonumber(total) then return -2 end
  if redis.call("SETBIT", KEYS[2], ordinal, 1) == 1 then return 0 end
  redis.call("HINCRBY", KEYS[1], "done", 1)
  if kind == "" then
    redis.call("HINCRBY", KEYS[1], "succeeded", 1)
  else
    redis.call("HINCRBY", KEYS[1], "failed", 1)
    redis.call("HINCRBY", KEYS[1], "failed:" .. kind, 1)
    redis.call("HSET", KEYS[3], ordinal,
      cjson.encode({message_id = message_id, kind = kind, reason = reason}))
  end
  if state ~= "sealed" then return 1 end
  return complete(KEYS[1], now)
end
"""
)

# KEYS: meta, done bitmap, failures. ARGV: ordinal, kind ("" for a success), message id,
# reason, now (ms).
SETTLE = _SETTLE_ONE + "return settle(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])"

# KEYS: as SETTLE's. ARGV: now (ms), then ordinals, each a success. Returns how many were new
# and whether the batch must fire: {new, 1 or 0}.
SETTLE_MANY = (
    _SETTLE_ONE
    + """
local new, fire = 0, 0
for i = 2, #ARGV do
  local answer = settle(tonumber(ARGV[i]), "", "", "", ARGV[1])
  if answer == 1 or answer == 2 then new = new + 1 end
  if answer == 2 then fire = 1 end
end
return {new, fire}
"""
)

# KEYS: meta. ARGV: now (ms). Seals an open batch with what it has, counts every member not yet
# done as failed (``cancelled``) and completes it at once: its callbacks do not wait for members
# that may never come (a producer that died mid-add); the members still queued are skipped
# when they come up, and recording one afterwards changes nothing.
CANCEL = """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return -1 end
if state == "firing" then return 2 end
if state == "fired" then return 0 end
if state == "open" then
  local added = redis.call("HGET", KEYS[1], "added")
  redis.call("HSET", KEYS[1], "total", added, "sealed_ms", ARGV[1])
end
local pending = tonumber(redis.call("HGET", KEYS[1], "total"))
  - tonumber(redis.call("HGET", KEYS[1], "done"))
if pending < 0 then pending = 0 end
redis.call("HINCRBY", KEYS[1], "failed", pending)
redis.call("HINCRBY", KEYS[1], "failed:cancelled", pending)
redis.call("HSET", KEYS[1], "state", "firing", "completed_ms", ARGV[1], "cancelled_ms", ARGV[1],
  "cancelled_pending", pending)
return 2
"""

# KEYS: meta, done bitmap, failures. ARGV: how long a completed batch is kept (ms). The
# callbacks are enqueued: the batch is final, and its keys expire.
FIRED = """
if redis.call("HGET", KEYS[1], "state") ~= "firing" then return 0 end
redis.call("HSET", KEYS[1], "state", "fired")
for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, ARGV[1]) end
return 1
"""


def meta_key(prefix: str, batch_id: str) -> str:
    """The hash of a batch's counters, state, times and callbacks."""
    return f"{prefix}:{batch_id}"


def done_key(prefix: str, batch_id: str) -> str:
    """The bitmap of a batch's members whose outcome is recorded, by ordinal."""
    return f"{meta_key(prefix, batch_id)}:done"


def failures_key(prefix: str, batch_id: str) -> str:
    """The hash of a batch's failed members: ordinal -> message id, kind and reason (JSON)."""
    return f"{meta_key(prefix, batch_id)}:failures"


def recent_key(prefix: str) -> str:
    """The sorted set of batch ids by when they were created (ms)."""
    return f"{prefix}:recent"
