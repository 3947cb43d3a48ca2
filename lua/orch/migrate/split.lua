--- orch.migrate.split: a SQL script into statements, by PostgreSQL's own
-- parser (orch.pgquery, libpg_query: PostgreSQL 15's grammar).
--
-- The parser knows every quoting and nesting rule (dollar quotes, E''
-- strings, nested comments, BEGIN ATOMIC bodies, CREATE RULE (...; ...)),
-- so migrate and lint see the same statements, numbers and lines, and each
-- statement comes with its parse tree. What the parser cannot read is
-- psql's COPY ... FROM stdin data: orch finds the COPY statement, takes
-- the lines after it up to a line "\." as its data, and parses on after it.
--
-- Placeholders (${name}) are read as identifiers of the same length, so a
-- script with placeholders not yet replaced (lint, the release planner)
-- parses, with every offset, line and column unchanged.
local pq = require "orch.pgquery"
local sys = require "orch.sys"

local split = {}

-- ------------------------------------------------------------ helpers

--- Byte offset just past the nested /* */ comment that starts at j (n + 1
-- when it is not closed by n).
local function after_comment(s, j, n)
  local depth, k = 1, j + 2
  while depth > 0 do
    local m = s:find("[/*]", k)
    if not m or m > n then return n + 1 end
    local t = s:sub(m, m + 1)
    if t == "/*" then depth, k = depth + 1, m + 2
    elseif t == "*/" then depth, k = depth - 1, m + 2
    else k = m + 1 end
  end
  return k
end

--- Byte offset (1-based) of the first token at or after i (and at or
-- before limit, default #s): blanks, -- and nested /* */ comments skipped.
-- Returns limit + 1 when only those follow.
function split.skip_blank(s, i, limit)
  local n = limit or #s
  while i <= n do
    local j = s:find("[^ \t\r\n\f\v]", i)
    if not j or j > n then return n + 1 end
    local two = s:sub(j, j + 1)
    if two == "--" then
      i = (s:find("\n", j, true) or n) + 1
    elseif two == "/*" then
      i = after_comment(s, j, n)
    else
      return j
    end
  end
  return n + 1
end

-- ${name} (and $${name}) as an identifier of the same length, and a leading
-- UTF-8 byte order mark as blanks (Flyway's files may start with one).
local function mask(text)
  if text:sub(1, 3) == "\239\187\191" then text = "   " .. text:sub(4) end
  if not text:find("${", 1, true) then return text end
  return (text:gsub("%$?%${[%w_.:-]+}", function(p)
    return "_" .. p:sub(2):gsub("[^%w_]", "_")
  end))
end

-- The upper-cased words of SQL text s, without comments, quoted strings,
-- quoted identifiers and dollar-quoted bodies (what the scanner counts as
-- keywords).
local function words(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local c, two = s:sub(i, i), s:sub(i, i + 1)
    if two == "--" then
      i = (s:find("\n", i, true) or n) + 1
    elseif two == "/*" then
      i = after_comment(s, i, n)
    elseif c == "'" or c == '"' then
      local k = i + 1
      while k <= n do
        if s:sub(k, k) == c then
          if s:sub(k + 1, k + 1) == c then k = k + 2 else break end
        elseif c == "'" and s:sub(k, k) == "\\" then k = k + 2
        else k = k + 1 end
      end
      i = k + 1
    elseif c == "$" and s:match("^%$[%a_]?[%w_]*%$", i) then
      local tag = s:match("^%$[%a_]?[%w_]*%$", i)
      local close = s:find(tag, i + #tag, true)
      i = close and close + #tag or n + 1
    elseif c:match("[%a_\128-\255]") then
      local w = s:match("^[%w_$\128-\255]+", i)
      out[#out + 1] = w:upper()
      i = i + #w
    else
      i = i + 1
    end
  end
  return out
end

-- The scanner cuts at every ";" outside quotes, also inside a routine's
-- BEGIN ATOMIC ... END body: join those pieces again. Like psql, inside the
-- CREATE FUNCTION/PROCEDURE statement BEGIN (ATOMIC) and CASE open a level
-- and END closes one; a range that leaves a level open goes on in the next.
local function join_atomic(part, ranges)
  local out, open = {}, nil
  for _, r in ipairs(ranges) do
    local w = words(part:sub(r.pos, r.pos + r.len - 1))
    if not open then
      local i = (w[1] == "CREATE" and w[2] == "OR" and w[3] == "REPLACE") and 4 or 2
      if w[1] == "CREATE" and (w[i] == "FUNCTION" or w[i] == "PROCEDURE") then open = { pos = r.pos, depth = 0 } end
    end
    if open then
      for k, x in ipairs(w) do
        if x == "BEGIN" and w[k + 1] == "ATOMIC" then open.depth = open.depth + 1
        elseif x == "CASE" and open.depth > 0 then open.depth = open.depth + 1
        elseif x == "END" and open.depth > 0 then open.depth = open.depth - 1 end
      end
      if open.depth <= 0 then
        out[#out + 1] = { pos = open.pos, len = r.pos + r.len - open.pos }
        open = nil
      end
    else
      out[#out + 1] = r
    end
  end
  if open then out[#out + 1] = { pos = open.pos, len = #part - open.pos + 1 } end
  return out
end

--- A function pos -> line number in text. Newlines are counted forward from
-- a remembered place: the lines of statements that come in order cost one
-- pass over the text in all (lint's findings use it too).
function split.line_counter(text)
  local at, line = 1, 1
  return function(pos)
    if pos < at then at, line = 1, 1 end
    while true do
      local nl = text:find("\n", at, true)
      if not nl or nl >= pos then break end
      line, at = line + 1, nl + 1
    end
    return line
  end
end

-- Is the statement at [pos, pos+len) of s a COPY ... FROM STDIN? Cheap test
-- of its first word, then the parser decides.
local function is_copy_from_stdin(s, pos, len)
  local k = split.skip_blank(s, pos, pos + len - 1)
  if not s:sub(k, k + 4):lower():match("^copy%f[^%w_]") then return false end
  local t = pq.parse(s:sub(pos, pos + len - 1))
  local c = t and t.stmts and t.stmts[1] and t.stmts[1].stmt.CopyStmt
  return c ~= nil and c.is_from == true and c.filename == nil and not c.is_program
end

-- The first COPY ... FROM STDIN of s: the offset of the ";" ending it, or
-- nil. The scanner finds statement ends without parsing; data after the
-- COPY may not even scan (a lone quote), so on a scan error the text before
-- the error is scanned again.
local function first_copy(s)
  if not s:lower():find("copy", 1, true) then return nil end
  local text = s
  for _ = 1, 64 do
    local ranges, _, _, _, off = pq.split(text, "scanner")
    if ranges then
      for _, r in ipairs(ranges) do
        local semi = r.pos + r.len
        if s:sub(semi, semi) == ";" and is_copy_from_stdin(s, r.pos, r.len) then return semi end
      end
      return nil
    end
    if not off or off <= 1 then return nil end
    text = s:sub(1, off - 1)
  end
  return nil
end

-- ------------------------------------------------------------ the splitter

local function fail(path, line, col, msg, code)
  local where = path and string.format("%s:%d:%d", path, line, col) or string.format("line %d, column %d", line, col)
  sys.error(string.format("%s: %s", where, msg), code or 1)
end

--- Split text into statements. Returns a list of
-- { sql = the statement's text (from just after the previous ";", so its
--   leading comments, through its own ";"), line = the line of its first
--   token, pos = byte offset of sql in text, copy = the data of a COPY ...
--   FROM STDIN (nil otherwise) }; with opts.trees also
--   tree = its parse tree node ({ AlterTableStmt = {...} }: libpg_query's
--   JSON as Lua tables) and base = the byte offset (0-based) its
--   "location" fields count from.
-- Text the parser rejects raises "path:line:column: message" (path may be
-- nil); so does a COPY FROM STDIN without its "\." line. The statements are
-- the same with or without trees (one grammar decides both).
-- opts.scanner: where the parser rejects the text, split it with the
-- scanner instead (tokens only: for servers newer than the grammar, which
-- then judge the syntax themselves); such statements carry unparsed = the
-- parser's "path:line:column: message". Without trees only.
function split.statements(text, path, opts)
  local trees = opts and opts.trees
  local scanner = opts and opts.scanner and not trees
  local masked = mask(text)
  local line_at = split.line_counter(text)
  local out = {}
  local base = 0 -- 0-based offset of the part being parsed
  local n = #text
  while base < n do
    local rest = base == 0 and masked or masked:sub(base + 1)
    local cut = first_copy(rest)
    local part = cut and rest:sub(1, cut) or rest
    local got, msg, _, col, off
    if trees then got, msg, _, col, off = pq.parse(part) else got, msg, _, col, off = pq.split(part) end
    local unparsed
    if not got and scanner then
      local where = path and string.format("%s:%d:%d", path, line_at(base + (off or 1)), col) or
        string.format("line %d, column %d", line_at(base + (off or 1)), col)
      unparsed = where .. ": " .. msg
      got = pq.split(part, "scanner")
      if got then got = join_atomic(part, got) end
    end
    if not got then
      -- the part starts on a line of its own: its columns are the text's
      fail(path, line_at(base + (off or 1)), col, msg)
    end
    for _, st in ipairs(trees and (got.stmts or {}) or got) do
      local loc, len
      if trees then loc, len = st.stmt_location or 0, st.stmt_len or 0 else loc, len = st.pos - 1, st.len end
      if len == 0 then len = #part - loc end
      local pos = base + loc + 1
      local stop = pos + len - 1
      if text:sub(stop + 1, stop + 1) == ";" then stop = stop + 1 end
      local first = split.skip_blank(text, pos, stop)
      out[#out + 1] = { sql = text:sub(pos, stop), line = line_at(first), pos = pos,
                        tree = trees and st.stmt or nil, base = trees and base or nil, unparsed = unparsed }
    end
    if not cut then break end
    -- the COPY's data: from the line after its ";" up to a line "\."
    local st = out[#out]
    local semi = base + cut
    local nl = text:find("\n", semi, true)
    local from = nl and nl + 1 or n + 1
    local e, stop = from, nil
    while e <= n do
      local eol = text:find("\n", e, true) or n + 1
      if text:sub(e, eol - 1):gsub("\r$", "") == "\\." then stop = e break end
      e = eol + 1
    end
    if not stop then
      fail(path, st.line, 1, "COPY ... FROM STDIN has no end of data (a line \\.): end its data with a line holding only \\.")
    end
    st.copy = text:sub(from, stop - 1)
    base = (text:find("\n", stop, true) or n)
  end
  return out
end

--- The statement kind of a tree node: "AlterTableStmt", "CreateStmt", ...
function split.kind(tree)
  return tree and next(tree)
end

return split
