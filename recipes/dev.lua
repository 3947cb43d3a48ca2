-- recipes/dev.lua -- the development flow, and the first thing a new user runs:
--   orch recipes/dev.lua            (or scripts/dev)
-- Uses the database in --db / DATABASE_URL when one is configured, otherwise
-- starts (or reuses) the project's throwaway local cluster in .orch/localpg
-- and recreates the database there from scratch. Then: migrate (the dev seed
-- data comes with the env=dev migrations, plus seeds/*.sql when that
-- directory exists), lint, a few health checks, and a summary. Runs as a
-- recipe: steps in the terminal and the run log (backups/dev/runs/),
-- --dry-run, --env. The migrations are read first: a missing migrations/
-- stops it before any database is touched (exit 1). The cluster keeps
-- running afterwards: `orch local stop` stops it, `orch local destroy`
-- removes it, `orch local status` shows it.
local R = require "orch.recipe"
local migrate = require "orch.migrate"
local lint = require "orch.lint"
local log = require "orch.log"
local sys = require "orch.sys"

local opts, env = R.setup({ ... }, "dev", {
  { name = "dbname", type = "string", default = "orch_dev", help = "database to (re)create in the local cluster" },
  { name = "keep", type = "boolean", help = "keep the existing local database instead of recreating it" },
}, "development: a fresh database, migrated with seed data, linted and checked")

local t0 = sys.monotonic()

local function project(ctx)
  return R.project(ctx)
end

return R.run {
  name = "dev", opts = opts, env = env, uses_migrations = true,
  steps = {
    R.step.lua { name = "database", about = "the local throwaway cluster unless a database is configured; recreated from scratch",
      plan = function(ctx)
        if ctx.localpg then
          return string.format("would %s the database %s in the local cluster", ctx.opts.keep and "reuse" or "recreate", ctx.opts.dbname)
        end
        return "would use the configured database " .. log.redact(ctx.url or "libpq defaults")
      end,
      run = function(ctx)
        if ctx.localpg then
          local pg = ctx.localpg
          log.info("      no database configured (--db, DATABASE_URL): using the local throwaway cluster in %s", pg.dir or ".orch/localpg")
          ctx:close_conn()
          ctx.url = pg:create_database(ctx.opts.dbname, { drop = not ctx.opts.keep })
          log.info("      %s the database %s on %s:%d", ctx.opts.keep and "reusing" or "recreated", ctx.opts.dbname, pg.host, pg.port)
        end
        local info = ctx:conn():info()
        return string.format("connected to %s on %s:%s as %s (PostgreSQL %s)", info.dbname, info.host, info.port, info.user, info.server_version)
      end },
    R.step.lua { name = "migrate", changes = true, about = "every pending migration, the env=dev seed migrations included",
      plan = function(ctx)
        local ok, r = pcall(function() return migrate.up(ctx:conn(), project(ctx), { dry_run = true }) end)
        if not ok then return "would migrate (the database is recreated first)" end
        local names = {}
        for _, e in ipairs(r.planned) do names[#names + 1] = e.name end
        return #names == 0 and "nothing to migrate" or ("would apply: " .. table.concat(names, ", "))
      end,
      run = function(ctx)
        local r = migrate.up(ctx:conn(), project(ctx), { run_id = ctx.run_id,
          on_progress = function(ev)
            if ev.event == "done" then log.info("      applied %-40s %5d ms", ev.migration.name, ev.ms) end
          end })
        ctx.state.applied = r.applied
        if #r.applied == 0 then log.info("      nothing to migrate: up to date") end
        return string.format("%d migration(s) applied", #r.applied)
      end },
    R.step.lua { name = "seed", changes = true, about = "seed data: the env=dev migrations, then seeds/*.sql if present",
      plan = function() return "would check the env=dev seed migrations and load seeds/*.sql if present" end,
      run = function(ctx)
        local c = ctx:conn()
        local st = migrate.status(c, project(ctx))
        local seeded = {}
        for _, it in ipairs(st.items) do
          local e = project(ctx).by_key[it.key]
          if e and e.directives and e.directives.env and it.state == "applied" then seeded[#seeded + 1] = it.script end
        end
        local files = {}
        for _, f in ipairs(sys.listdir("seeds") or {}) do if f:match("%.sql$") then files[#files + 1] = f end end
        table.sort(files)
        for _, f in ipairs(files) do
          local h = assert(io.open("seeds/" .. f, "rb"))
          local text = h:read("a")
          h:close()
          c:tx(function() c:exec(text) end)
          log.info("      loaded seeds/%s", f)
        end
        if #seeded == 0 and #files == 0 then return "no seed data in this project" end
        return string.format("%s%s", #seeded > 0 and ("from " .. table.concat(seeded, ", ")) or "",
          #files > 0 and (" and " .. #files .. " file(s) in seeds/") or "")
      end },
    R.step.lua { name = "lint", about = "risky operations in every migration (reported, never fatal in dev)",
      plan = function() return "would lint every migration" end,
      run = function(ctx)
        lint.load_rules("orch.lint.lua")
        local findings = lint.run(project(ctx))
        ctx.state.lint = findings
        if #findings > 0 then log.info("%s", (lint.format(findings):gsub("^", "      "):gsub("\n", "\n      "))) end
        return #findings == 0 and "no findings" or string.format("%d finding(s)", #findings)
      end },
    -- the same checks as orch check --env dev; the whole table, since dev is where people look
    R.step.verify { name = "health", table = "all" },
  },
  always = {
    R.step.lua { name = "summary", about = "what is ready, and how to connect",
      plan = function() return "would print the summary" end,
      run = function(ctx)
        if ctx.exit_code ~= 0 then return "the run failed: see above" end
        local c = ctx:conn()
        local findings = ctx.state.lint or {}
        print(string.format("dev database ready in %.1fs: %s, schema at V%s, %d applied now, %d lint finding%s, health %s",
          sys.monotonic() - t0, log.redact(ctx.url), migrate.current_version(c, project(ctx)) or "-", #(ctx.state.applied or {}),
          #findings, #findings == 1 and "" or "s", ctx.state.health and ctx.state.health.status or "not checked"))
        print("connect with: psql " .. log.redact(ctx.url))
        if ctx.localpg then
          print("the local cluster keeps running: 'orch local stop' stops it, 'orch local destroy' removes it")
        end
        return "ok"
      end },
  },
}
