-- Reads a loop of corrupt archives made from the seed corpus (truncations
-- and byte flips at fixed places) and checks that each one is refused with
-- a message; run under valgrind it proves that no error path leaks (the
-- decompressor state included):
--   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
--     --error-exitcode=1 build/orch tests/fuzz/corrupt_loop.lua [ROUNDS]
local A = require "orch.pgarchive"
local sys = require "orch.sys"
local rounds = tonumber(arg and arg[1]) or 1
local dir = sys.mkdtemp("/tmp/orch-corrupt-")
local seeds = {}
for _, f in ipairs(sys.listdir("tests/fuzz/corpus")) do
  local h = assert(io.open("tests/fuzz/corpus/" .. f, "rb"))
  seeds[#seeds + 1] = h:read("a")
  h:close()
end
table.sort(seeds)
local tried, refused = 0, 0
local function try(bytes)
  local p = dir .. "/x.dump"
  local h = assert(io.open(p, "wb"))
  h:write(bytes)
  h:close()
  tried = tried + 1
  local ok, err = pcall(function()
    local r <close> = A.open(p)
    r:verify()
    for _, e in ipairs(r:entries()) do if e.had_dumper then r:read_block(e.id, function() end) end end
  end)
  if not ok then
    assert(type(err) == "string" and err:find(p, 1, true), "not a message naming the file: " .. tostring(err))
    refused = refused + 1
  end
end
for _ = 1, rounds do
  for _, s in ipairs(seeds) do
    for cut = 40, #s - 1, 97 do try(s:sub(1, cut)) end                       -- truncated
    for at = 60, #s, 53 do                                                    -- one byte changed
      try(s:sub(1, at - 1) .. string.char((s:byte(at) + 0x41) % 256) .. s:sub(at + 1))
    end
    try(s .. "\1\0\0\0\0")                                                    -- junk after the end
  end
end
sys.rmtree(dir)
print(string.format("%d corrupt archives, %d refused with a message, the rest read as valid", tried, refused))
