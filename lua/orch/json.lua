--- orch.json: JSON for --json output, manifests and run logs.
-- encode(v) sorts object keys so output is stable; arrays are tables with
-- keys 1..n (an empty table encodes as [] unless json.object() made it);
-- json.null stands for null both ways. Integers stay integers both ways
-- (math.maxinteger round-trips exactly); a string that is not valid UTF-8
-- is refused by encode and decode alike.
--
-- The parsing and string escaping are lua-cjson's (Debian's Lua 5.4 build,
-- linked in as orch.cjson). lua-cjson 2.1 reads every number as a double
-- and prints 14 significant digits, so numbers are orch's own: encode
-- prints integers with all their digits and floats with the fewest digits
-- that read back the same; decode turns every integral value into a Lua
-- integer, and a text with a number beyond 2^53 (whose integer literal may
-- have had digits a double cannot hold) is parsed again by the exact Lua
-- parser below. So is a text holding an empty object, which lua-cjson does
-- not tell from [].
local cjson = require("orch.cjson").new()
cjson.decode_invalid_numbers(false)   -- JSON's numbers only: no hex, inf or nan
cjson.decode_max_depth(1000)

local cj_encode, cj_decode, cj_null = cjson.encode, cjson.decode, cjson.null
local find, gsub, format, sub, byte = string.find, string.gsub, string.format, string.sub, string.byte
local concat, sort = table.concat, table.sort
local utf8_len, math_type, tointeger = utf8.len, math.type, math.tointeger
local huge = math.huge

local json = {}

json.null = setmetatable({}, { __tostring = function() return "null" end, __name = "json.null" })
local object_mt = { __name = "json.object" }

--- Mark t as a JSON object even when empty.
function json.object(t) return setmetatable(t or {}, object_mt) end

-- ------------------------------------------------------------ encode

local function preview(s)
  return (format("%q", sub(s, 1, 40)):gsub("\\\n", "\\n"))
end

-- json.encode{bytes = true} lets strings that are not UTF-8 through, byte for byte (see json.encode)
local allow_bytes = false

local function encode_string(s, key)
  -- most strings need no escaping at all: printable ASCII but for " and \
  if not find(s, '[^ !#-%[%]-~]') then return '"' .. s .. '"' end
  if not allow_bytes and find(s, "[\128-\255]") then
    local ok, bad = utf8_len(s)
    if not ok then
      error(format("json.encode: %s is not valid UTF-8 (byte %d of %s)",
        key == true and "an object key" or key and ("the value of key " .. tostring(key)) or "a string", bad, preview(s)), 0)
    end
  end
  local e = cj_encode(s)
  -- lua-cjson writes "/" as "\/"; it never leaves a bare "/", so every "\/" is that escape
  if find(e, "\\/", 1, true) then e = gsub(e, "\\/", "/") end
  return e
end

local function encode_number(v)
  if math_type(v) == "integer" then return format("%d", v) end
  if v ~= v or v == huge or v == -huge then return "null" end
  local s = format("%.14g", v)
  if tonumber(s) ~= v then
    s = format("%.16g", v)
    if tonumber(s) ~= v then s = format("%.17g", v) end
  end
  return s
end

-- n > 0 when t is an array of n elements (keys exactly 1..n), 0 when empty
-- (an array unless json.object), -1 for an object.
local function array_size(t)
  if getmetatable(t) == object_mt then return -1 end
  local k = next(t)
  if k == nil then return 0 end
  if math_type(k) ~= "integer" then return -1 end
  local n, count = #t, 0
  if n == 0 then return -1 end
  for key in pairs(t) do
    if math_type(key) ~= "integer" or key < 1 or key > n then return -1 end
    count = count + 1
  end
  return count == n and n or -1
end

-- The encoder writes into out[1..]; its position is passed along and returned.
local encode_value
-- object keys repeat from object to object: their encoded form is kept (a bounded cache)
local key_cache, cached = {}, 0

local function encode_table(v, out, o, indent, depth)
  if depth > 100 then error("json.encode: nesting too deep (a cycle?)", 0) end
  local nl = indent and ("\n" .. string.rep(indent, depth + 1)) or ""
  local close = indent and ("\n" .. string.rep(indent, depth)) or ""
  local n = array_size(v)
  if n == 0 then o = o + 1; out[o] = "[]" return o end
  if n > 0 then
    o = o + 1; out[o] = "["
    for i = 1, n do
      if i > 1 then o = o + 1; out[o] = "," end
      if indent then o = o + 1; out[o] = nl end
      o = encode_value(v[i], out, o, indent, depth + 1)
    end
    o = o + 1; out[o] = close .. "]"
    return o
  end
  local keys, nk, numeric = {}, 0, false
  for k in pairs(v) do
    nk = nk + 1
    if type(k) == "string" then keys[nk] = k else keys[nk] = tostring(k); numeric = true end
  end
  if nk == 0 then o = o + 1; out[o] = "{}" return o end
  sort(keys)
  o = o + 1; out[o] = "{"
  for i = 1, nk do
    local k = keys[i]
    if i > 1 then o = o + 1; out[o] = "," end
    local val = v[k]
    if val == nil and numeric then val = v[tonumber(k)] end
    local ek = key_cache[k]   -- '"key":'
    if not ek then
      ek = encode_string(k, true) .. ":"
      -- (a key let through by bytes = true is not kept: a strict encode must still refuse it)
      if not allow_bytes then
        if cached > 4096 then key_cache, cached = {}, 0 end
        key_cache[k], cached = ek, cached + 1
      end
    end
    if indent then out[o + 1] = nl; out[o + 2] = ek; out[o + 3] = " "; o = o + 3
    else o = o + 1; out[o] = ek end
    local t = type(val)
    if t == "string" then o = o + 1; out[o] = encode_string(val, k)
    else o = encode_value(val, out, o, indent, depth + 1, k) end
  end
  o = o + 1; out[o] = close .. "}"
  return o
end

function encode_value(v, out, o, indent, depth, key)
  local t = type(v)
  if t == "string" then o = o + 1; out[o] = encode_string(v, key)
  elseif t == "number" then o = o + 1; out[o] = encode_number(v)
  elseif t == "table" then
    if v == json.null then o = o + 1; out[o] = "null"
    else o = encode_table(v, out, o, indent, depth) end
  elseif t == "boolean" then o = o + 1; out[o] = v and "true" or "false"
  elseif v == nil then o = o + 1; out[o] = "null"
  else
    error("json.encode: cannot encode a " .. t .. (key and (" (the value of key " .. tostring(key) .. ")") or ""), 0)
  end
  return o
end

--- Encode v; opts.indent (e.g. "  ") pretty-prints. Raises on a value JSON
-- cannot hold (a function, a cycle, a string that is not UTF-8). With
-- opts.bytes, strings that are not UTF-8 are written byte for byte (not
-- strict JSON): for orch's own files that must carry a SQL_ASCII or LATIN1
-- database's names as the server gave them (a backup's manifest), read back
-- with json.decode(text, { bytes = true }).
function json.encode(v, opts)
  local out = {}
  allow_bytes = opts and opts.bytes or false
  local ok, err = pcall(encode_value, v, out, 0, opts and opts.indent, 0)
  allow_bytes = false
  if not ok then error(err, 0) end
  return concat(out)
end

-- ------------------------------------------------------------ decode

local function decode_error(s, pos, what)
  local line = select(2, sub(s, 1, pos):gsub("\n", "")) + 1
  error(format("invalid JSON at line %d (byte %d): %s", line, pos, what), 0)
end

-- The exact parser (integers of any length, empty objects).

local function skip(s, pos)
  return find(s, "[^ \t\r\n]", pos) or #s + 1
end

local decode_value
local ESCAPES = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }

local function decode_string(s, pos)
  local out, i = {}, pos + 1
  while true do
    local j = find(s, '["\\%c]', i)
    if not j then decode_error(s, #s + 1, "unterminated string") end
    if j > i then out[#out + 1] = sub(s, i, j - 1) end
    local c = sub(s, j, j)
    if c == '"' then return concat(out), j + 1 end
    if c ~= "\\" then decode_error(s, j, "control character in a string") end
    local e = sub(s, j + 1, j + 1)
    if ESCAPES[e] then out[#out + 1] = ESCAPES[e]; i = j + 2
    elseif e == "u" then
      local hex = sub(s, j + 2, j + 5)
      if not hex:match("^%x%x%x%x$") then decode_error(s, j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = sub(s, i, i + 1) == "\\u" and tonumber(sub(s, i + 2, i + 5), 16)
        if not (lo and lo >= 0xDC00 and lo <= 0xDFFF) then decode_error(s, j, "a \\u escape of a lone surrogate (not UTF-8)") end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
        i = i + 6
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        decode_error(s, j, "a \\u escape of a lone surrogate (not UTF-8)")
      end
      out[#out + 1] = utf8.char(cp)
    else decode_error(s, j, "bad escape") end
  end
end

function decode_value(s, pos)
  pos = skip(s, pos)
  local c = sub(s, pos, pos)
  if c == "{" then
    local t = json.object({})
    pos = skip(s, pos + 1)
    if sub(s, pos, pos) == "}" then return t, pos + 1 end
    while true do
      if sub(s, pos, pos) ~= '"' then decode_error(s, pos, "object key expected") end
      local k
      k, pos = decode_string(s, pos)
      pos = skip(s, pos)
      if sub(s, pos, pos) ~= ":" then decode_error(s, pos, "':' expected") end
      t[k], pos = decode_value(s, pos + 1)
      pos = skip(s, pos)
      local d = sub(s, pos, pos)
      if d == "}" then return t, pos + 1 end
      if d ~= "," then decode_error(s, pos, "',' or '}' expected") end
      pos = skip(s, pos + 1)
    end
  elseif c == "[" then
    local t, n = {}, 0
    pos = skip(s, pos + 1)
    if sub(s, pos, pos) == "]" then return t, pos + 1 end
    while true do
      n = n + 1
      t[n], pos = decode_value(s, pos)
      pos = skip(s, pos)
      local d = sub(s, pos, pos)
      if d == "]" then return t, pos + 1 end
      if d ~= "," then decode_error(s, pos, "',' or ']' expected") end
      pos = pos + 1
    end
  elseif c == '"' then return decode_string(s, pos)
  elseif sub(s, pos, pos + 3) == "true" then return true, pos + 4
  elseif sub(s, pos, pos + 4) == "false" then return false, pos + 5
  elseif sub(s, pos, pos + 3) == "null" then return json.null, pos + 4
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or num == "" or num == "-" then decode_error(s, pos, "unexpected '" .. c .. "'") end
    local v = tonumber(num)
    if not v then decode_error(s, pos, "bad number " .. num) end
    return tointeger(v) or v, pos + #num
  end
end

local function lua_decode(s)
  local v, pos = decode_value(s, 1)
  pos = skip(s, pos)
  if pos <= #s then decode_error(s, pos, "trailing characters") end
  return v
end

-- lua-cjson's result in orch's terms: integral numbers as integers, its
-- null as json.null, objects marked. Sets state.inexact when a number is
-- beyond 2^53 (its literal may have had digits a double cannot hold) and
-- state.empty when an empty table was seen (lua-cjson reads {} and [] alike).
local TWO53 = 2 ^ 53

local function adopt(v, state)
  local t = type(v)
  if t == "number" then
    if v >= TWO53 or v <= -TWO53 then state.inexact = true end
    return tointeger(v) or v
  end
  if t == "table" then
    if v[1] ~= nil then
      for i = 1, #v do
        local x = v[i]
        if type(x) ~= "string" then v[i] = adopt(x, state) end
      end
    elseif next(v) == nil then
      state.empty = true
    else
      for k, x in pairs(v) do
        if type(x) ~= "string" then v[k] = adopt(x, state) end
      end
      setmetatable(v, object_mt)
    end
    return v
  end
  if v == cj_null then return json.null end
  return v
end

-- Does the text hold an empty object ({ and } with only white space between)?
local function has_empty_object(s)
  local i = find(s, "{", 1, true)
  while i do
    local j = find(s, "[^ \t\r\n]", i + 1)
    if j and byte(s, j) == 125 then return true end
    i = find(s, "{", i + 1, true)
  end
  return false
end

-- lua-cjson's token names, as a reader would say them
local TOKENS = { T_OBJ_BEGIN = "'{'", T_OBJ_END = "'}'", T_ARR_BEGIN = "'['", T_ARR_END = "']'", T_STRING = "a string",
  T_NUMBER = "a number", T_BOOLEAN = "a boolean", T_NULL = "null", T_COLON = "':'", T_COMMA = "','", T_END = "the end of the text",
  T_WHITESPACE = "white space", T_ERROR = "an error", T_UNKNOWN = "an unknown token" }

--- Decode a JSON text; raises "invalid JSON at line L (byte N): ..." on bad
-- input, invalid UTF-8 included (unless opts.bytes: see json.encode).
function json.decode(s, opts)
  if type(s) ~= "string" then error("json.decode: a string expected, got " .. type(s), 2) end
  if not (opts and opts.bytes) then
    local ok8, bad = utf8_len(s)
    if not ok8 then decode_error(s, bad, "invalid UTF-8") end
  end
  local ok, v = pcall(cj_decode, s)
  if not ok then
    local msg = tostring(v)
    local pos = tonumber(msg:match("at character (%d+)")) or 1
    decode_error(s, pos, (msg:gsub(" at character %d+$", ""):gsub("T_[%u_]+", TOKENS)))
  end
  local state = {}
  v = adopt(v, state)
  -- what lua-cjson cannot tell: an integer beyond a double's 53 bits, {} from []
  if state.inexact or (state.empty and has_empty_object(s)) then return lua_decode(s) end
  return v
end

return json
