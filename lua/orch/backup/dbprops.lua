--- orch.backup.dbprops: an archive's entries about the database itself —
-- DATABASE (CREATE DATABASE with encoding and locale), its COMMENT,
-- SECURITY LABEL and ACL (tags "DATABASE name") and DATABASE PROPERTIES
-- (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET, CONNECTION
-- LIMIT, IS_TEMPLATE) — and what a restore does with them.
--
-- pg_restore runs them only with --create. orch restore --swap creates the
-- database, so it creates it as the archive says and applies all of them
-- there; a restore into an existing database (the default, and
-- --drop-existing) leaves the target's own in place and names each
-- statement it left out. The statements name the database the archive came
-- from: they are rewritten for the database they are applied to.
local P = {}

local DB_DESC = { COMMENT = true, ["SECURITY LABEL"] = true, ACL = true }

--- Is entry e about the database itself (not restored into an existing database)?
function P.is_database_entry(e)
  if e.desc == "DATABASE" or e.desc == "DATABASE PROPERTIES" then return true end
  return DB_DESC[e.desc] == true and (e.tag or ""):sub(1, 9) == "DATABASE "
end

-- ---------------------------------------------------------------- SQL text

-- The end of a quoted stretch starting at i (a quote character q): the
-- index of its closing quote (a doubled quote stays inside). backslash:
-- an E'' string, where \ escapes the next character.
local function close_quote(s, i, q, backslash)
  local j = i + 1
  while j <= #s do
    local ch = s:sub(j, j)
    if backslash and ch == "\\" then j = j + 2
    elseif ch == q then
      if s:sub(j + 1, j + 1) == q then j = j + 2 else return j end
    else j = j + 1 end
  end
  return #s
end

--- The tokens of one SQL text: { text, kind } with kind "word", "ident"
-- (a "quoted" identifier), "string", "space", "comment" or "punct"; dollar
-- quoted bodies are strings. Concatenating the texts gives s back.
function P.tokens(s)
  local out, i = {}, 1
  while i <= #s do
    local ch = s:sub(i, i)
    local j, kind
    if ch:match("%s") then j = (s:find("[^%s]", i) or (#s + 1)) - 1; kind = "space"
    elseif s:sub(i, i + 1) == "--" then j = (s:find("\n", i, true) or #s); kind = "comment"
    elseif ch == "'" then j = close_quote(s, i, "'", false); kind = "string"
    elseif (ch == "E" or ch == "e") and s:sub(i + 1, i + 1) == "'" then j = close_quote(s, i + 1, "'", true); kind = "string"
    elseif ch == '"' then j = close_quote(s, i, '"', false); kind = "ident"
    elseif ch == "$" and s:match("^%$[%a_]*%$", i) then
      local tag = s:match("^%$[%a_]*%$", i)
      local e = s:find(tag, i + #tag, true)
      j = e and (e + #tag - 1) or #s
      kind = "string"
    elseif ch:match("[%w_]") then j = (s:find("[^%w_$]", i) or (#s + 1)) - 1; kind = "word"
    else j = i; kind = "punct" end
    out[#out + 1] = { text = s:sub(i, j), kind = kind }
    i = j + 1
  end
  return out
end

--- The statements of a script, without their semicolons and surrounding
-- space (semicolons inside strings, identifiers and comments do not split).
function P.statements(sql)
  local out, cur = {}, {}
  for _, t in ipairs(P.tokens(sql or "")) do
    if t.kind == "punct" and t.text == ";" then
      local st = table.concat(cur):match("^%s*(.-)%s*$")
      if st ~= "" then out[#out + 1] = st end
      cur = {}
    else
      cur[#cur + 1] = t.text
    end
  end
  local st = table.concat(cur):match("^%s*(.-)%s*$")
  if st ~= "" and not st:match("^%-%-") then out[#out + 1] = st end
  return out
end

-- Keywords after which DATABASE names the database.
local BEFORE = { CREATE = true, ALTER = true, ON = true, IN = true, DROP = true }

--- stmt with the database it names (CREATE / ALTER / DROP DATABASE x,
-- ... ON DATABASE x, ... IN DATABASE x) replaced by qname (already
-- quoted). Returns the statement and whether it named one.
function P.retarget(stmt, qname)
  local toks = P.tokens(stmt)
  local prev
  for i, t in ipairs(toks) do
    if t.kind == "word" then
      if t.text:upper() == "DATABASE" and prev and BEFORE[prev] then
        for k = i + 1, #toks do
          local n = toks[k]
          if n.kind == "word" or n.kind == "ident" then
            -- IF EXISTS before the name (DROP DATABASE IF EXISTS x)
            if n.kind == "word" and (n.text:upper() == "IF" or n.text:upper() == "EXISTS") then goto continue end
            n.text = qname
            local out = {}
            for _, x in ipairs(toks) do out[#out + 1] = x.text end
            return table.concat(out), true
          elseif n.kind ~= "space" and n.kind ~= "comment" then
            break
          end
          ::continue::
        end
      end
      prev = t.text:upper()
    elseif t.kind ~= "space" and t.kind ~= "comment" then
      prev = nil
    end
  end
  return stmt, false
end

-- ---------------------------------------------------------------- an archive's database entries

--- The database entries of an archive (its entry list): { database = the
-- DATABASE entry or nil, comment = the COMMENT entry or nil, items = the
-- other entries (SECURITY LABEL, ACL, DATABASE PROPERTIES) in file order }.
function P.of_archive(entries)
  local r = { items = {} }
  for _, e in ipairs(entries) do
    if P.is_database_entry(e) then
      if e.desc == "DATABASE" then r.database = e
      elseif e.desc == "COMMENT" then r.comment = e
      else r.items[#r.items + 1] = e end
    end
  end
  return r
end

--- The statements of entries (a list), rewritten for the database qname.
function P.statements_for(entries, qname)
  local out = {}
  for _, e in ipairs(entries) do
    for _, st in ipairs(P.statements(e.defn)) do out[#out + 1] = (P.retarget(st, qname)) end
  end
  return out
end

--- Everything of the archive's database entries, as statements for the
-- database qname (for the report of a restore that leaves them out): the
-- comment first, then labels, privileges and settings. The DATABASE entry
-- itself (its encoding and locale) is described, not a statement.
function P.all_statements(d, qname)
  local list = {}
  if d.comment then list[#list + 1] = d.comment end
  for _, e in ipairs(d.items) do list[#list + 1] = e end
  return P.statements_for(list, qname)
end

return P
