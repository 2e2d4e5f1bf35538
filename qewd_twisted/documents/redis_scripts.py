# -*- test-case-name: tests.documents.test_store -*-
"""
The Lua scripts RedisStore runs (each one atomic on the server, one round trip), over
ewd-redis-globals' key layout (redis.py's docstring describes it). Imports nothing.
"""

# KEYS: leaf node, leaf children, leaves, then (node, children) of each ancestor, nearest first.
# ARGV: mode ("set" | "incr"), value | by, leaf path ("" for a root), then the member each
# ancestor's children set gets, nearest first. Returns the value written.
SET = """
local value = ARGV[2]
if ARGV[1] == 'incr' then
  local cur = redis.call('HGET', KEYS[1], 'value') or ''
  local n = tonumber(string.match(cur, '^%s*([+-]?%d+)')) or 0
  value = string.format('%d', n + tonumber(ARGV[2]))
end
local d = redis.call('HGET', KEYS[1], 'data')
if d == '1' or d == '11' then
  -- it had a value: it is in the leaves set, and its ancestors exist
  redis.call('HSET', KEYS[1], 'value', value)
  return value
end
local kids = redis.call('EXISTS', KEYS[2]) == 1
redis.call('HSET', KEYS[1], 'data', kids and '11' or '1', 'value', value)
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], 0, ARGV[3]) end
if d then return value end
local levels = (#KEYS - 3) / 2
for i = 1, levels do
  local nk, ck = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  redis.call('ZADD', ck, 0, ARGV[3 + i])
  local d = redis.call('HGET', nk, 'data')
  if not d then
    redis.call('HSET', nk, 'data', '10')
  else
    if d == '1' then redis.call('HSET', nk, 'data', '11') end
    break
  end
end
return value
"""

# set_document: KEYS[1] leaves; then E children keys, I inner node keys, L (node, children)
# pairs. ARGV: E, I, L, then E members, then L (leaf path, value) pairs.
SET_MANY = """
local e, n, l = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, e do redis.call('ZADD', KEYS[1 + i], 0, ARGV[3 + i]) end
for i = 1, n do
  local nk = KEYS[1 + e + i]
  local d = redis.call('HGET', nk, 'data')
  if not d then redis.call('HSET', nk, 'data', '10')
  elseif d == '1' then redis.call('HSET', nk, 'data', '11') end
end
for j = 1, l do
  local nk, ck = KEYS[1 + e + n + 2 * j - 1], KEYS[1 + e + n + 2 * j]
  local kids = redis.call('EXISTS', ck) == 1
  redis.call('HSET', nk, 'data', kids and '11' or '1', 'value', ARGV[3 + e + 2 * j])
  local leaf = ARGV[3 + e + 2 * j - 1]
  if leaf ~= '' then redis.call('ZADD', KEYS[1], 0, leaf) end
end
return 1
"""

# delete: KEYS: node, children, leaves, then (node, children) of each ancestor, nearest first.
# ARGV: leaf path ("" for a root), then the node's member in each ancestor, nearest first.
DELETE = """
local function unpad(m)
  if string.byte(m, 1) == 1 then
    local s = string.gsub(string.sub(m, 2), '^0+', '')
    if s == '' then s = '0' end
    return s
  end
  return m
end
local function wipe(nk, ck)
  local members = redis.call('ZRANGE', ck, 0, -1)
  for _, m in ipairs(members) do
    local s = unpad(m)
    wipe(nk .. '\\1' .. s, ck .. '\\1' .. s)
  end
  redis.call('DEL', nk, ck)
end
wipe(KEYS[1], KEYS[2])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[3])
  return 1
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREMRANGEBYLEX', KEYS[3], '[' .. ARGV[1] .. '\\1', '(' .. ARGV[1] .. '\\2')
local levels = (#KEYS - 3) / 2
for i = 1, levels do
  local nk, ck = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  redis.call('ZREM', ck, ARGV[1 + i])
  if redis.call('EXISTS', ck) == 1 then break end
  if redis.call('HEXISTS', nk, 'value') == 1 then
    redis.call('HSET', nk, 'data', '1')
    break
  end
  redis.call('DEL', nk)
end
return 1
"""

# tree: KEYS: node, children. Returns depth, member, has value, value for each node below,
# depth first in children-set order.
TREE = """
local out = {}
local function walk(nk, ck, depth)
  local members = redis.call('ZRANGE', ck, 0, -1)
  for _, m in ipairs(members) do
    local s = m
    if string.byte(m, 1) == 1 then
      s = string.gsub(string.sub(m, 2), '^0+', '')
      if s == '' then s = '0' end
    end
    local cnk, cck = nk .. '\\1' .. s, ck .. '\\1' .. s
    local v = redis.call('HGET', cnk, 'value')
    out[#out + 1] = depth
    out[#out + 1] = m
    if v then out[#out + 1] = 1; out[#out + 1] = v else out[#out + 1] = 0; out[#out + 1] = '' end
    walk(cnk, cck, depth + 1)
  end
end
walk(KEYS[1], KEYS[2], 0)
return out
"""

# unlock: KEYS locker, lock list; ARGV token, lease ms for the wake-up list.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('RPUSH', KEYS[2], 'unlocked by ' .. ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
