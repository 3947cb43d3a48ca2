--- orch.project: the project root, found the way git finds its repository.
--
-- For `orch path/to/recipe.lua` the search starts in the recipe's directory,
-- else (or when that finds nothing) in the current directory, and walks up
-- to the first directory holding orch.env.lua or a migrations/ directory.
-- orch then works in that directory: migrations/, backups/, run logs,
-- .orch/ (the dev cluster), orch.lint.lua, orch.health.lua and a recipe's
-- own modules (require "steps.x") are the project's, wherever you stand,
-- and nothing is written into the directory you ran orch from. Paths you
-- type (--output FILE, --dir DIR, an archive to restore) stay relative to
-- where you stand: orch.args makes them absolute (project.from_cwd).
--
--   project.enter { recipe = "recipes/dev.lua" }   -- cli.main does this
--   project.root, project.cwd                       -- nil root: not in a project
--   project.need("pass --dir DIR")                  -- raises (exit 2) outside one
local sys = require "orch.sys"

local P = { markers = { "orch.env.lua", "migrations" } }

local ELOOP = 40

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

-- collapse "//", "/./" and "x/.." in an absolute path (for display and
-- for telling two spellings of one link apart; never used to open files)
local function tidy(p)
  local out = {}
  for part in p:gmatch("[^/]+") do
    if part == ".." then out[#out] = nil
    elseif part ~= "." then out[#out + 1] = part end
  end
  return "/" .. table.concat(out, "/")
end

--- path made absolute against dir (default: the current directory),
-- without resolving symbolic links.
function P.absolute(path, dir)
  if path:sub(1, 1) == "/" then return tidy(path) end
  dir = dir or P.cwd or sys.realpath(".") or "."
  return tidy(dir .. "/" .. path)
end

--- When path is a symbolic link that loops, the chain of its links as a
-- text ("a -> b -> a"); nil when it is not a loop of links.
function P.link_loop(path)
  local chain, seen, p = { path }, {}, P.absolute(path)
  seen[p] = true
  for _ = 1, 40 do
    local target = sys.readlink(p)
    if not target then return nil end
    chain[#chain + 1] = target
    p = P.absolute(target, dirname(p))
    if seen[p] then return table.concat(chain, " -> ") end
    seen[p] = true
  end
  return table.concat(chain, " -> ") .. " -> ..."
end

--- The message for a path that cannot be reached because of a symbolic
-- link loop (errno ELOOP), or nil when err is some other failure.
function P.loop_message(path, errno)
  if errno ~= ELOOP then return nil end
  local chain = P.link_loop(path)
  if chain then return string.format("%s is a symbolic link loop (%s): point the link at a real file, or remove it", path, chain) end
  return string.format("%s cannot be reached: a symbolic link loop in its path (a link that leads back to itself): fix or remove it", path)
end

--- The project root above dir (an absolute directory), or nil.
function P.find(dir)
  local d = dir
  while true do
    for _, m in ipairs(P.markers) do
      local path = d .. (d == "/" and "" or "/") .. m
      local st, _, errno = sys.stat(path)
      if st and (m ~= "migrations" or st.type == "directory") then return d end
      local loop = not st and P.loop_message(path, errno)
      if loop then sys.error(loop, 1) end
    end
    if d == "/" then return nil end
    d = dirname(d)
  end
end

--- Find the root (from opts.recipe's directory, else the current
-- directory) and work there. Sets P.root (nil outside any project) and
-- P.cwd (where orch was started). Returns the root.
function P.enter(opts)
  opts = opts or {}
  P.cwd = sys.realpath(".") or os.getenv("PWD") or "."
  local root
  P.recipe_dir = opts.recipe and dirname(P.absolute(opts.recipe)) or nil
  if P.recipe_dir then root = P.find(P.recipe_dir) end
  root = root or P.find(P.cwd)
  if root then
    -- the root by its real path, so that "am I there already" compares equal
    root = sys.realpath(root) or root
    if root ~= P.cwd then
      local ok, err = sys.chdir(root)
      if not ok then sys.error(string.format("cannot work in the project root: %s", err), 1) end
    end
  end
  P.root = root
  return root
end

--- Did orch move into the project root from somewhere else?
function P.moved()
  return P.root ~= nil and P.cwd ~= nil and P.root ~= P.cwd
end

--- A path the user typed (relative to where they stand) that orch can
-- open from the project root: absolute when orch moved there; "-" and
-- absolute paths as they are.
-- A URL (s3://bucket/prefix) is no path: it stays as it is.
local function is_url(p) return p:match("^%a[%w+.-]*://") ~= nil end

function P.from_cwd(path)
  if type(path) ~= "string" or path == "-" or path == "" or path:sub(1, 1) == "/" or is_url(path) or not P.moved() then return path end
  return P.absolute(path, P.cwd)
end

--- A path inside the project (relative to its root) as orch shows and
-- uses it: as it is when orch runs in the root it was started in, else
-- absolute, so that messages name files the user can find from there.
function P.path(rel)
  if type(rel) ~= "string" or rel:sub(1, 1) == "/" or is_url(rel) or not P.moved() then return rel end
  return P.root .. "/" .. rel
end

--- The environments file: ORCH_ENV_FILE (relative to where orch was
-- started), else orch.env.lua in the project root.
function P.env_file()
  local f = os.getenv("ORCH_ENV_FILE")
  if f and f ~= "" then return P.from_cwd(f) end
  return "orch.env.lua"
end

--- Raise (exit 2) when orch runs outside any project; how names what to
-- do instead (e.g. "pass --dir DIR").
function P.need(what, how)
  if P.root then return P.root end
  local here = P.cwd or sys.realpath(".") or "."
  local where = here .. " is not"
  if P.recipe_dir and P.recipe_dir ~= here then where = "neither the recipe's directory " .. P.recipe_dir .. " nor " .. here .. " is" end
  sys.error(string.format("%s needs a project, and %s inside one (no orch.env.lua or migrations/ directory there or " ..
    "in any directory above it): run it inside your project%s", what or "this", where,
    how and (", or " .. how) or ""), 2)
end

return P
