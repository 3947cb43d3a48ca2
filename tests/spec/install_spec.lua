-- Installing orch: `cmake --install` into a temporary prefix, the installed
-- binary run from /, the generated man pages rendered by man and groff, the
-- bash, zsh and fish completions run by their shells, and the Debian
-- package cpack builds: its files, its dependencies (every library the
-- binary links belongs to one), a root holding only the package and the
-- files of its dependency closure where orch (under chroot) backs up the
-- test server and verifies the archive, and dpkg -i / -r into a scratch
-- root whose dpkg database holds only those dependencies (this machine is
-- not changed).
local H = require "helper"
local sys = require "orch.sys"
local cli = require "orch.cli"
local json = require "orch.json"

local build = H.orch_bin:match("^(.*)/[^/]+$")

local function run(argv, opts)
  opts = opts or {}
  argv.cwd = opts.cwd or "/"
  argv.timeout = opts.timeout or 300
  argv.env = { ORCH_LUA_PATH = false, DATABASE_URL = false, NO_COLOR = false }
  for k, v in pairs(opts.env or {}) do argv.env[k] = v end
  return sys.spawn(argv)
end

local prefix   -- one install for the whole spec
local function installed()
  if prefix then return prefix end
  local p = H.tmpdir() .. "/prefix"
  local r = run { "cmake", "--install", build, "--prefix", p }
  assert(r.ok, "cmake --install failed: " .. r.stdout .. r.stderr)
  prefix = p
  return p
end

local function commands() return cli.commands() end

describe("cmake --install", function()
  it("installs the binary, man pages, completions and recipes in the usual places under the prefix", function()
    local p = installed()
    local st = sys.stat(p .. "/bin/orch")
    assert.equals("file", st.type)
    assert.is_true(sys.spawn({ "test", "-x", p .. "/bin/orch" }).ok)
    assert.is_true(sys.exists(p .. "/share/man/man1/orch.1"))
    for _, n in ipairs(commands()) do
      assert.is_true(sys.exists(p .. "/share/man/man1/orch-" .. n .. ".1"), "orch-" .. n .. ".1")
    end
    assert.is_true(sys.exists(p .. "/share/bash-completion/completions/orch"))
    assert.is_true(sys.exists(p .. "/share/zsh/site-functions/_orch"))
    assert.is_true(sys.exists(p .. "/share/fish/vendor_completions.d/orch.fish"))
    assert.is_true(sys.exists(p .. "/share/orch/recipes/dev.lua"))
    assert.is_true(sys.exists(p .. "/share/doc/orch/README.md"))
  end)

  it("under /usr (as the package installs it) zsh's completion goes to vendor-completions, and DESTDIR is honoured", function()
    local dest = H.tmpdir()
    local r = run({ "cmake", "--install", build, "--prefix", "/usr" }, { env = { DESTDIR = dest } })
    assert.is_true(r.ok, r.stdout .. r.stderr)
    assert.is_true(sys.exists(dest .. "/usr/share/zsh/vendor-completions/_orch"))
    assert.is_true(sys.exists(dest .. "/usr/bin/orch"))
  end)

  it("the installed binary runs from / with its embedded library", function()
    local p = installed()
    local help = run { p .. "/bin/orch", "--help" }
    assert.equals(0, help.code, help.stderr)
    assert.matches("usage: orch", help.stdout)
    for _, n in ipairs(commands()) do assert.matches("\n  " .. n .. " ", help.stdout, nil, true) end
    local v = run { p .. "/bin/orch", "version" }
    assert.equals(0, v.code, v.stderr)
    assert.matches("^orch " .. package.orch_version:gsub("%.", "%%.") .. " %(Lua 5%.4, libpq %d+%.%d+%)\n$", v.stdout)
    local m = run { p .. "/bin/orch", "help", "migrate" }
    assert.equals(0, m.code)
    assert.equals(H.orch({ "help", "migrate" }).stdout, m.stdout)
  end)
end)

describe("the man pages", function()
  it("render with man and groff without a warning, and say what --help says", function()
    local p = installed()
    local pages = { "orch" }
    for _, n in ipairs(commands()) do pages[#pages + 1] = "orch-" .. n end
    for _, page in ipairs(pages) do
      local file = p .. "/share/man/man1/" .. page .. ".1"
      local g = run { "groff", "-man", "-ww", "-z", file }
      assert.equals(0, g.code, page)
      assert.equals("", g.stderr, page .. ": groff warns")
      local m = run({ "man", "--warnings", "-l", file }, { env = { MANWIDTH = "80", MANPAGER = "cat", PAGER = "cat", LANG = "C.UTF-8" } })
      assert.equals(0, m.code, page .. ": " .. m.stderr)
      assert.equals("", m.stderr, page .. ": man warns")
      assert.matches("NAME\n", m.stdout, nil, true)
      assert.matches(page, m.stdout, nil, true)
    end
    -- a command's page has its options and examples, from the same table as its --help
    local man = run({ "man", "-l", p .. "/share/man/man1/orch-backup.1" }, { env = { MANWIDTH = "200", MANPAGER = "cat", LANG = "C" } }).stdout
    man = man:gsub(".\b", "")   -- no overstrike
    for _, o in ipairs(cli.spec_of(cli.command("backup"))) do
      assert.truthy(man:find("--" .. o.name, 1, true), "--" .. o.name .. " in orch-backup(1)")
    end
    for _, e in ipairs(cli.command("backup").examples) do assert.truthy(man:find(e, 1, true), e) end
    local top = run({ "man", "-l", p .. "/share/man/man1/orch.1" }, { env = { MANWIDTH = "200", MANPAGER = "cat", LANG = "C" } }).stdout:gsub(".\b", "")
    for _, e in ipairs(cli.exit_codes) do assert.truthy(top:find(e[2]:sub(1, 30), 1, true), e[2]) end
    for _, n in ipairs(commands()) do assert.truthy(top:find("orch-" .. n .. "(1)", 1, true), n) end
  end)
end)

describe("the shell completions", function()
  -- what bash's completion function offers for a command line (the word under the cursor last)
  local function bash(words, cwd)
    local p = installed()
    local script = string.format([[source %q
COMP_WORDS=(%s)
COMP_CWORD=%d
_orch
printf '%%s\n' "${COMPREPLY[@]}"
]], p .. "/share/bash-completion/completions/orch",
      table.concat((function() local t = {} for i, w in ipairs(words) do t[i] = string.format("%q", w) end return t end)(), " "),
      #words - 1)
    local r = run({ "bash", "--norc", "--noprofile", "-c", script },
      { cwd = cwd or H.tmpdir(), env = { PATH = p .. "/bin:" .. os.getenv("PATH"), ORCH_ENV = false } })
    assert.equals(0, r.code, r.stderr)
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l end
    table.sort(out)
    return out
  end

  it("bash completes commands, a command's options and their values", function()
    assert.same(commands(), bash { "orch", "" })
    assert.same({ "migrate" }, bash { "orch", "mig" })
    assert.same({ "--dry-run" }, bash { "orch", "migrate", "--dr" })
    assert.same({ "--json" }, bash { "orch", "--js" })
    assert.same({ "--json" }, bash { "orch", "status", "--js" })
    local backup = bash { "orch", "backup", "-" }
    for _, o in ipairs { "--output", "-o", "--compress", "-Z", "--no-prune", "--quiet", "-q", "--verbose", "--help" } do
      assert.truthy(table.concat(backup, " "):find(o, 1, true), o)
    end
    assert.same({ "list", "prune" }, bash { "orch", "backups", "" })
    assert.same({ "destroy", "start", "status", "stop" }, bash { "orch", "local", "" })
    assert.same({ "db", "http" }, bash { "orch", "check", "--only", "" })
    assert.same({ "migrate" }, bash { "orch", "help", "mi" })
    assert.same({ "--dry-run" }, bash { "orch", "recipes/dev.lua", "--dry" })
  end)

  it("bash and fish complete --env with the project's environments and --fleet-target with the fleet's targets", function()
    local dir = H.tmpdir()
    H.write(dir .. "/orch.env.lua", [[return {
  dev = {}, staging = { protected = true },
  tenants = { targets = { "tenant_a", "tenant_b", { name = "eu", service = "tickets_eu" } } },
}]])
    sys.mkdir_p(dir .. "/sub")
    assert.same({ "dev", "staging", "tenants" }, bash({ "orch", "migrate", "--env", "" }, dir))
    assert.same({ "staging" }, bash({ "orch", "backups", "--env", "st" }, dir .. "/sub"))
    assert.same({ "dev", "staging", "tenants" }, bash({ "orch", "recipes/prod.lua", "--env", "" }, dir))
    assert.same({ "eu", "tenant_a", "tenant_b" }, bash({ "orch", "status", "--env", "tenants", "--fleet-target", "" }, dir))
    assert.same({ "tenant_b" }, bash({ "orch", "backups", "list", "--env=tenants", "--fleet-target", "tenant_b" }, dir))
    assert.same({ "--list" }, bash({ "orch", "fleet", "--li" }, dir))
    assert.same({ "eu", "tenant_a", "tenant_b" }, bash({ "orch", "fleet", "--list", "--env", "tenants", "--only", "" }, dir))
    -- an environment without targets, or no project: nothing to offer, and no error on the terminal
    assert.same({}, bash({ "orch", "status", "--env", "staging", "--fleet-target", "" }, dir))
    assert.same({}, bash({ "orch", "status", "--env", "" }, H.tmpdir()))
    local fish = installed() .. "/share/fish/vendor_completions.d/orch.fish"
    local r = run({ "fish", "--no-config", "-c", string.format("source %q; complete -C %q", fish, "orch status --env tenants --fleet-target ten") },
      { cwd = dir, env = { HOME = H.tmpdir(), PATH = installed() .. "/bin:" .. os.getenv("PATH"), ORCH_ENV = false } })
    assert.equals(0, r.code, r.stderr)
    assert.matches("^tenant_a\t", r.stdout)
    assert.matches("\ntenant_b\t", r.stdout)
    r = run({ "fish", "--no-config", "-c", string.format("source %q; complete -C %q", fish, "orch migrate --env sta") },
      { cwd = dir, env = { HOME = H.tmpdir(), PATH = installed() .. "/bin:" .. os.getenv("PATH"), ORCH_ENV = false } })
    assert.matches("^staging", r.stdout)
  end)

  it("zsh and fish load their scripts; fish completes commands and options", function()
    local p = installed()
    local z = run { "zsh", "-n", p .. "/share/zsh/site-functions/_orch" }
    assert.equals(0, z.code, "zsh -n: " .. z.stderr)
    local fish = p .. "/share/fish/vendor_completions.d/orch.fish"
    local f = run { "fish", "-n", fish }
    assert.equals(0, f.code, "fish -n: " .. f.stderr)
    local function fc(line)
      local r = run({ "fish", "--no-config", "-c", string.format("source %q; complete -C %q", fish, line) },
        { cwd = H.tmpdir(), env = { HOME = H.tmpdir() } })
      assert.equals(0, r.code, r.stderr)
      return r.stdout
    end
    assert.matches("^migrate\t", fc("orch mig"))
    assert.matches("%-%-dry%-run\t", fc("orch migrate --dr"))
    assert.matches("^list\n", fc("orch backups "))
    assert.matches("^db\t.-\nhttp\t", fc("orch check --only "))
  end)
end)

local deb_file   -- one package for the whole describe
local function deb()
  if deb_file then return deb_file end
  local out = H.tmpdir()
  local r = run({ "cpack", "-G", "DEB", "-B", out, "--config", build .. "/CPackConfig.cmake" }, { timeout = 600 })
  assert(r.code == 0, "cpack failed: " .. r.stdout .. r.stderr)
  for _, f in ipairs(sys.listdir(out)) do if f:match("%.deb$") then deb_file = out .. "/" .. f end end
  assert(deb_file, "no .deb in " .. out)
  return deb_file
end

local function depends(file)
  local d = run { "dpkg-deb", "-f", file, "Depends" }
  assert(d.code == 0, d.stderr)
  local names = {}
  for item in d.stdout:gmatch("[^,]+") do names[#names + 1] = item:match("^%s*([%w%.%+%-]+)") end
  return names, d.stdout
end

describe("cpack -G DEB", function()
  it("builds a Debian package with orch's files and the libraries it links as dependencies", function()
    local file = deb()
    assert.matches("orch_" .. package.orch_version:gsub("%.", "%%.") .. "_amd64%.deb$", file)
    local c = run { "dpkg-deb", "-c", file }
    assert.equals(0, c.code, c.stderr)
    for _, f in ipairs { "./usr/bin/orch", "./usr/share/man/man1/orch.1", "./usr/share/man/man1/orch-migrate.1",
                         "./usr/share/bash-completion/completions/orch", "./usr/share/zsh/vendor-completions/_orch",
                         "./usr/share/fish/vendor_completions.d/orch.fish", "./usr/share/orch/recipes/dev.lua" } do
      assert.truthy(c.stdout:find(f, 1, true), f .. " in the package")
    end
    local _, deps = depends(file)
    for _, lib in ipairs { "libc6", "libpq5", "liblua5.4-0", "libcurl4", "zlib1g", "libdeflate0", "liblz4-1", "libzstd1", "libssl3" } do
      assert.matches("%f[%w]" .. lib:gsub("%p", "%%%0") .. " %(>=", deps, nil, lib)
    end
    assert.matches("postgresql", run({ "dpkg-deb", "-f", file, "Recommends" }).stdout)
    -- the packaged (stripped) binary runs
    local x = H.tmpdir()
    assert.is_true(run({ "dpkg-deb", "-x", file, x }).ok)
    local v = run { x .. "/usr/bin/orch", "--version" }
    assert.equals(0, v.code, v.stderr)
    assert.matches("^orch " .. package.orch_version:gsub("%.", "%%."), v.stdout)
  end)

  it("every library the packaged binary links comes from a package its Depends names", function()
    local file = deb()
    local x = H.tmpdir()
    assert.is_true(run({ "dpkg-deb", "-x", file, x }).ok)
    local names = depends(file)
    local named = {}
    for _, n in ipairs(names) do named[n] = true end
    local needed = run { "readelf", "-d", x .. "/usr/bin/orch" }
    assert.equals(0, needed.code, needed.stderr)
    local ldd = run { "ldd", x .. "/usr/bin/orch" }
    assert.equals(0, ldd.code, ldd.stderr)
    local count = 0
    for lib in needed.stdout:gmatch("%(NEEDED%)%s+Shared library: %[([^%]]+)%]") do
      count = count + 1
      local path = ldd.stdout:match("\t" .. lib:gsub("%p", "%%%0") .. " => (%S+)")
      assert.truthy(path, lib .. " is not found by ldd")
      local owner = run { "dpkg", "-S", path }
      if owner.code ~= 0 then owner = run { "dpkg", "-S", "/usr" .. path } end   -- /lib is /usr/lib (usrmerge)
      assert.equals(0, owner.code, lib .. ": no package owns " .. path)
      local pkg = owner.stdout:match("^([^:,%s]+)")
      assert.is_true(named[pkg] == true, string.format("%s (%s, package %s) is not in Depends: %s", lib, path, pkg,
        table.concat(names, ", ")))
    end
    assert.is_true(count >= 7, "readelf found " .. count .. " NEEDED libraries")
  end)

  it("on a machine that has only the package and what its Depends bring in, orch backs up a real server and verifies it", function()
    local file = deb()
    -- the installed packages Depends names and, through their own Depends, everything those need
    local want, seen, closure = depends(file), {}, {}
    while #want > 0 do
      local name = table.remove(want, 1)
      if not seen[name] then
        seen[name] = true
        local q = run { "dpkg-query", "-W", "-f", "${Status}\t${Depends}, ${Pre-Depends}", name }
        if q.code == 0 and q.stdout:match("^install ok installed\t") then
          closure[#closure + 1] = name
          for item in q.stdout:match("\t(.*)$"):gmatch("[^,]+") do
            for alt in item:gmatch("[^|]+") do   -- the first alternative installed here
              local n = alt:match("^%s*([%w%.%+%-]+)")
              if n and run({ "dpkg-query", "-W", "-f", "${Status}", n }).stdout == "install ok installed" then
                want[#want + 1] = n
                break
              end
            end
          end
        end
      end
    end
    assert.is_true(#closure >= 7, table.concat(closure, " "))
    -- a root of those packages' files only (usrmerge's links first, as Debian 12 has them), then the .deb
    local root = H.tmpdir()
    for _, d in ipairs { "usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "tmp" } do assert.is_true(run({ "mkdir", "-p", root .. "/" .. d }).ok) end
    for _, d in ipairs { "bin", "lib", "lib64", "sbin" } do assert.is_true(run({ "ln", "-s", "usr/" .. d, root .. "/" .. d }).ok) end
    for _, name in ipairs(closure) do
      local list = { "cp", "-a", "--parents" }
      for f in run({ "dpkg", "-L", name }).stdout:gmatch("[^\n]+") do
        local st = sys.stat(f)   -- followed: /lib itself (a link to usr/lib here) is a directory too
        if st and st.type ~= "directory" then list[#list + 1] = f end
      end
      list[#list + 1] = root .. "/"
      if #list > 4 then
        local c = run(list)
        assert.equals(0, c.code, name .. ": " .. c.stderr)
      end
    end
    assert.is_true(run({ "dpkg-deb", "-x", file, root }).ok)
    assert.is_false(sys.exists(root .. "/usr/lib/postgresql"), "no server, no client programs in the root")
    local chroot = sys.getuid and sys.getuid() ~= 0 and { "unshare", "-r", "chroot", root } or { "chroot", root }
    local function inside(argv)
      local a = {}
      for i, x in ipairs(chroot) do a[i] = x end
      for _, x in ipairs(argv) do a[#a + 1] = x end
      return run(a)
    end
    local v = inside { "/usr/bin/orch", "--version" }
    assert.equals(0, v.code, v.stderr)
    assert.matches("^orch " .. package.orch_version:gsub("%.", "%%."), v.stdout)
    local url, dbname = H.fresh_db("install_root")
    local c <close> = require("orch.db").connect(url)
    c:exec("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 500) g")
    local b = inside { "/usr/bin/orch", "backup", "--db", url, "-o", "/tmp/t.dump", "--json" }
    assert.equals(0, b.code, b.stderr)
    assert.equals(dbname, json.decode(b.stdout).database)
    local ver = inside { "/usr/bin/orch", "verify", "/tmp/t.dump" }
    assert.equals(0, ver.code, ver.stderr)
    assert.matches("sha256 matches the manifest", ver.stdout)
    assert.is_true(sys.exists(root .. "/tmp/t.dump"))
    c:close()
    H.drop_db(dbname)
  end)

  it("dpkg -i installs it into a root that has only its dependencies; orch runs from there; dpkg -r removes every file", function()
    local file = deb()
    -- a scratch dpkg root whose database holds exactly the packages Depends names (as this machine has
    -- them): dpkg configures orch only when each one is present in a version that satisfies it
    local root = H.tmpdir()
    for _, d in ipairs { "/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/triggers" } do
      assert.is_true(run({ "mkdir", "-p", root .. d }).ok)
    end
    local status = {}
    for _, n in ipairs(depends(file)) do
      local q = run { "dpkg-query", "-s", n }
      assert.equals(0, q.code, n .. " is not installed here: " .. q.stderr)
      status[#status + 1] = q.stdout:gsub("\n*$", "\n")
    end
    H.write(root .. "/var/lib/dpkg/status", table.concat(status, "\n"))
    H.write(root .. "/var/lib/dpkg/available", "")
    local i = run { "dpkg", "--root=" .. root, "--log=/dev/null", "-i", file }
    assert.equals(0, i.code, i.stdout .. i.stderr)
    assert.matches("Status: install ok installed", run({ "dpkg", "--root=" .. root, "-s", "orch" }).stdout)
    local help = run { root .. "/usr/bin/orch", "--help" }
    assert.equals(0, help.code, help.stderr)
    assert.matches("^orch %- PostgreSQL", help.stdout)
    local man = run({ "man", "-l", root .. "/usr/share/man/man1/orch-migrate.1" }, { env = { MANPAGER = "cat", LANG = "C" } })
    assert.equals(0, man.code, man.stderr)
    local r = run { "dpkg", "--root=" .. root, "--log=/dev/null", "-r", "orch" }
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local left = run { "find", root, "-path", root .. "/var", "-prune", "-o", "-type", "f", "-print" }
    assert.equals("", left.stdout, "files left after dpkg -r")
    -- without one of them (libpq5) dpkg refuses to configure it, naming it
    H.write(root .. "/var/lib/dpkg/status", ((table.concat(status, "\n") .. "\n"):gsub("Package: libpq5\n.-\n\n", "")))
    local nodep = run { "dpkg", "--root=" .. root, "--log=/dev/null", "-i", file }
    assert.is_not.equals(0, nodep.code)
    assert.matches("libpq5", nodep.stderr)
  end)
end)
