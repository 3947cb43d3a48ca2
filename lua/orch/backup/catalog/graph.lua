--- orch.backup.catalog.graph: dependencies between the objects of a
-- backup, and the order they are written in.
--
-- Edges come from pg_depend (normal and automatic dependencies between user
-- objects) plus the explicit deps the kind modules give. A dependency on a
-- member of an extension is a dependency on the extension; one on a part
-- written inline (a column default inside CREATE TABLE) is one on the part's
-- parent. Sections are kept apart by two boundary nodes, as pg_dump does:
-- every pre-data object comes before the data, every post-data object after it.
--
-- The order is a topological sort that, among the objects whose
-- dependencies are all written, takes the one with the lowest (prio, schema,
-- tag). When the dependencies form a cycle, it is broken by writing an
-- inline part on its own: a column default as ALTER TABLE ... SET DEFAULT,
-- a CHECK as ALTER TABLE ... ADD CONSTRAINT, a view's query as CREATE OR
-- REPLACE VIEW after a placeholder view. A cycle with no such part is an
-- error naming every object in it.
local sys = require "orch.sys"

local G = {}

local PRE, POST = "boundary:pre", "boundary:post"

-- The rows of pg_depend between user objects, loaded once per build.
-- A reference to an extension member becomes one to its extension.
function G.depends(cat)
  if cat._depends then return cat._depends end
  cat._depends = cat:query([[
    SELECT d.classid::pg_catalog.regclass::text AS cls, d.objid, d.objsubid, d.deptype,
           CASE WHEN e.refobjid IS NOT NULL THEN 'pg_extension' ELSE d.refclassid::pg_catalog.regclass::text END AS refcls,
           coalesce(e.refobjid, d.refobjid) AS refobjid, d.refobjsubid
    FROM pg_catalog.pg_depend d
    LEFT JOIN pg_catalog.pg_depend e ON e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e' AND d.deptype <> 'e'
    WHERE d.objid >= 16384 AND d.deptype <> 'p']])
  return cat._depends
end

-- The non-inline object that stands for key: aliases followed, inline
-- parts mapped to their parent. Returns the object and the inline part the
-- reference went through (nil when direct).
local function node_of(cat, key)
  local o = cat.objects[cat:resolve(key)]
  local via
  while o and o.inline do
    via = via or o
    o = cat.objects[o.parent]
  end
  if o and (o.skipped or o.excluded) then return nil end
  return o, via
end

local function describe(cat, key)
  if key == PRE then return "(the end of pre-data)" end
  if key == POST then return "(the start of post-data)" end
  local o = cat.objects[key]
  return string.format("%s %s%s", o.desc, o.namespace and (o.namespace .. ".") or "", o.tag or key)
end

--- Resolve every dependency into edges: o.out[target key] = true, on the
-- objects themselves (inline parts keep theirs, for when they are split out).
function G.load(cat)
  for _, o in ipairs(cat.list) do o.out = {} end
  -- objects that would be written although they need one --skip leaves out
  local orphans, seen = {}, {}
  local function edge(from, to)
    if not from or not to or from.skipped or from.excluded then return end
    local t = to
    while t and t.inline do t = cat.objects[t.parent] end
    -- what a backup's selection (-n, -t, ...) leaves out orders nothing, as in pg_dump
    if not t or t.excluded then return end
    if t.skipped then
      local f = from
      while f.inline and cat.objects[f.parent] do f = cat.objects[f.parent] end
      if not f.skipped and not seen[f.key .. ">" .. t.key] then
        seen[f.key .. ">" .. t.key] = true
        orphans[#orphans + 1] = { from = f, to = t }
      end
      return
    end
    -- never an edge from an object to itself or to its own parent chain
    local f = from
    while f do
      if f == t then return end
      f = f.inline and cat.objects[f.parent] or nil
    end
    -- a reference the kind module redirected (a type's I/O function to its shell type)
    local r = cat.redirects[from.key .. ">" .. t.key]
    if r then
      t = cat.objects[r]
      if not t or t.skipped then return end
    end
    from.out[t.key] = true
  end
  for _, r in ipairs(G.depends(cat)) do
    if r.deptype == "n" or r.deptype == "a" then
      local from = cat.objects[cat:resolve(r.cls .. ":" .. r.objid)]
      local to = cat.objects[cat:resolve(r.refcls .. ":" .. r.refobjid)]
      if from and to and not (from.no_auto_dep and from.no_auto_dep[to.key]) then edge(from, to) end
    end
  end
  for _, o in ipairs(cat.list) do
    for _, k in ipairs(o.deps) do edge(o, cat.objects[cat:resolve(k)]) end
  end
  if #orphans > 0 then
    local lines, kinds = {}, {}
    for i, x in ipairs(orphans) do
      if i > 20 then lines[#lines + 1] = string.format("  ... and %d more", #orphans - 20) break end
      lines[#lines + 1] = string.format("  - %s needs %s (--skip %s)", describe(cat, x.from.key), describe(cat, x.to.key), x.to.kind or "?")
      kinds[x.from.kind or "?"] = true
    end
    local also = {}
    for k in pairs(kinds) do also[#also + 1] = "--skip " .. k end
    table.sort(also)
    sys.error("the backup was not taken: objects it would write need objects --skip leaves out, so it could not be restored:\n" ..
      table.concat(lines, "\n") .. "\nleave those out too (" .. table.concat(also, " ") .. "), or keep the kind they need", 1)
  end
end

-- ---------------------------------------------------------------- a small binary heap

local function heap_push(h, x, less)
  h[#h + 1] = x
  local i = #h
  while i > 1 do
    local p = i // 2
    if less(h[i], h[p]) then h[i], h[p] = h[p], h[i]; i = p else break end
  end
end

local function heap_pop(h, less)
  local top, n = h[1], #h
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and less(h[l], h[m]) then m = l end
    if r <= n and less(h[r], h[m]) then m = r end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end

local function before(a, b)
  if a.prio ~= b.prio then return a.prio < b.prio end
  local na, nb = a.namespace or "", b.namespace or ""
  if na ~= nb then return na < nb end
  local ta, tb = a.tag or "", b.tag or ""
  if ta ~= tb then return ta < tb end
  return a.seq < b.seq
end

-- The graph's nodes and their targets: every non-inline, non-skipped
-- object, with the edges of its inline parts folded in. Returns nodes,
-- targets (node key -> set of keys) and, per edge, the inline parts that
-- contributed it (node key -> target key -> list of parts; nil = direct).
local function build(cat)
  local nodes, targets, via = {}, {}, {}
  local pre = { key = PRE, desc = "BOUNDARY", prio = 100, seq = 0, tag = "" }
  local post = { key = POST, desc = "BOUNDARY", prio = 200, seq = 0, tag = "" }
  nodes[1], nodes[2] = pre, post
  targets[PRE], targets[POST] = {}, { [PRE] = true }
  local function add_target(n, t, part)
    targets[n.key][t] = true
    via[n.key] = via[n.key] or {}
    if part then
      local v = via[n.key][t]
      if v ~= "direct" then
        v = v or {}
        v[#v + 1] = part
        via[n.key][t] = v
      end
    else
      via[n.key][t] = "direct"
    end
  end
  for _, o in ipairs(cat.list) do
    if not o.inline and not o.skipped and not o.excluded then
      nodes[#nodes + 1] = o
      targets[o.key] = targets[o.key] or {}
    end
  end
  for _, o in ipairs(cat.list) do
    if not o.skipped and not o.excluded then
      local n, part = o, nil
      while n.inline do part = part or n; n = cat.objects[n.parent] end
      for t in pairs(o.out or {}) do
        if t ~= n.key then add_target(n, t, o.inline and o or nil) end
      end
      if not o.inline then
        if o.section == "pre-data" then targets[PRE][o.key] = true
        elseif o.section == "data" then add_target(o, PRE); targets[POST][o.key] = true
        else add_target(o, POST) end
      end
    end
  end
  return nodes, targets, via
end

-- Kahn's algorithm with a heap; returns the order, or nil and the nodes left.
local function kahn(nodes, targets)
  local by_key, waiting, rev = {}, {}, {}
  for _, n in ipairs(nodes) do by_key[n.key] = n; waiting[n.key] = 0; rev[n.key] = {} end
  for _, n in ipairs(nodes) do
    for t in pairs(targets[n.key]) do
      if by_key[t] then
        waiting[n.key] = waiting[n.key] + 1
        local r = rev[t]
        r[#r + 1] = n
      end
    end
  end
  local heap, order = {}, {}
  for _, n in ipairs(nodes) do if waiting[n.key] == 0 then heap_push(heap, n, before) end end
  while #heap > 0 do
    local n = heap_pop(heap, before)
    order[#order + 1] = n
    for _, m in ipairs(rev[n.key]) do
      waiting[m.key] = waiting[m.key] - 1
      if waiting[m.key] == 0 then heap_push(heap, m, before) end
    end
  end
  if #order == #nodes then return order end
  local left = {}
  for _, n in ipairs(nodes) do if waiting[n.key] > 0 then left[n.key] = n end end
  return nil, left
end

-- The cycles among the nodes left, one per walk: from each node not yet
-- walked, follow unmet targets until a node repeats (a new cycle) or an
-- earlier walk is met (nothing new). Breaking many independent cycles per
-- pass keeps a schema with thousands of serial columns fast.
local function find_cycles(left, targets)
  local keys = {}
  for k, n in pairs(left) do keys[#keys + 1] = n end
  table.sort(keys, function(a, b) return (a.seq or 0) < (b.seq or 0) end)
  local walked, cycles = {}, {}
  for _, n in ipairs(keys) do
    if not walked[n.key] then
      local pos, path, k = {}, {}, n.key
      while k and not pos[k] and not walked[k] do
        path[#path + 1] = k
        pos[k] = #path
        local nxt
        for t in pairs(targets[k]) do if left[t] then nxt = t break end end
        k = nxt
      end
      if k and pos[k] then
        local cycle = {}
        for i = pos[k], #path do cycle[#cycle + 1] = path[i] end
        cycles[#cycles + 1] = cycle
      end
      for _, p in ipairs(path) do walked[p] = true end
    end
  end
  return cycles
end


--- The objects in a valid execution order (boundaries included, inline
-- parts left out). Splits inline parts out to break cycles; raises when a
-- cycle cannot be broken.
function G.sort(cat)
  local PRIO = require("orch.backup.catalog").PRIO
  for _ = 1, 1000 do
    local nodes, targets, via = build(cat)
    local order, left = kahn(nodes, targets)
    if order then return order, targets end
    for _, cycle in ipairs(find_cycles(left, targets)) do
      -- an edge of the cycle that only inline parts made: split them out. The one
      -- that points into a later section (a view's query needing a post-data key)
      -- goes first, as pg_dump would split it; else the first one.
      local rank = { ["pre-data"] = 1, data = 2, ["post-data"] = 3 }
      local chosen
      for i, k in ipairs(cycle) do
        local t = cycle[i % #cycle + 1]
        local parts = via[k] and via[k][t]
        if type(parts) == "table" then
          local all = true
          for _, p in ipairs(parts) do if not p.split then all = false end end
          if all then
            local from, to = cat.objects[k], cat.objects[t]
            local later = from and to and (rank[to.section] or 0) > (rank[from.section] or 0)
            if not chosen or (later and not chosen.later) then chosen = { parts = parts, later = later } end
            if later then break end
          end
        end
      end
      local fixed = chosen ~= nil
      for _, p in ipairs(chosen and chosen.parts or {}) do
        if p.inline then
          p.inline = false
          p.split(p, cat)
          p.prio = PRIO[p.desc] or p.prio
          p.out[p.parent] = true
        end
      end
      if not fixed then
        local names = {}
        for _, k in ipairs(cycle) do names[#names + 1] = describe(cat, k) end
        sys.error("the backup was not taken: these objects depend on each other in a circle orch cannot break:\n  " ..
          table.concat(names, "\n  -> ") .. "\n  -> " .. names[1] ..
          "\nplease report this with the list above; --skip the kind of one of them to back up the rest", 1)
      end
    end
  end
  sys.error("the backup was not taken: too many dependency cycles to break", 1)
end

return G
