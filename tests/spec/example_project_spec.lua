-- The example project in migrations/: the ticket system of the brief.
-- migrate, undo to nothing, migrate again must leave the same schema, and
-- the schema must carry the brief's rules.
local H = require "helper"
local db = require "orch.db"

local function schema_dump(url)
  return H.schema_of(url, { exclude_table = "orch_schema_history" })
end

describe("the example project", function()
  local url, name, c
  setup(function()
    url, name = H.fresh_db("example")
    c = db.connect(url)
  end)
  teardown(function()
    c:close()
    H.drop_db(name)
  end)

  it("migrates, undoes to nothing, and migrates again to the same schema", function()
    local r = H.orch { "migrate", "--db", url, "--env", "dev" }
    assert.is_true(r.ok, r.stderr)
    local first = schema_dump(url)
    assert.matches("CREATE TABLE public.tickets", first, 1, true)
    local u = H.orch { "undo", "--target", "0", "--yes", "--db", url, "--env", "dev" }
    assert.is_true(u.ok, u.stderr)
    assert.equals(0, c:value([[SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
        AND c.relname NOT LIKE 'orch\_schema\_history%']]), "only the history table (and its sequence) is left")
    assert.equals(0, c:value("SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'e'"))
    assert.is_true(H.orch({ "migrate", "--db", url, "--env", "dev" }).ok)
    assert.equals(first, schema_dump(url))
  end)

  it("has the brief's ON DELETE rules", function()
    local rules = {}
    for _, r in ipairs(c:query("SELECT conname, confdeltype FROM pg_constraint WHERE contype = 'f'")) do rules[r.conname] = r.confdeltype end
    assert.equals("r", rules.tickets_requestor_id_fkey)
    assert.equals("n", rules.tickets_assigned_to_fkey)
    assert.equals("n", rules.tickets_sla_policy_id_fkey)
    for _, k in ipairs { "comments_ticket_id_fkey", "attachments_ticket_id_fkey", "ticket_history_ticket_id_fkey",
      "escalations_ticket_id_fkey", "notifications_ticket_id_fkey", "notifications_user_id_fkey",
      "refresh_tokens_user_id_fkey", "user_sessions_user_id_fkey", "password_resets_user_id_fkey" } do
      assert.equals("c", rules[k], k)
    end
    assert.equals("n", rules.audit_logs_user_id_fkey)
  end)

  it("has the SLA policies P1-P4 as data, seed data only in dev, and a working history trigger and search", function()
    assert.equals("P1,P2,P3,P4", c:value("SELECT string_agg(priority::text, ',' ORDER BY priority) FROM sla_policies"))
    assert.equals(20, c:value("SELECT count(*) FROM tickets"))
    local before = c:value("SELECT count(*) FROM ticket_history")
    c:exec("UPDATE tickets SET status = 'ESCALATED' WHERE ticket_number = 'TKT-1001'")
    assert.equals(before + 1, c:value("SELECT count(*) FROM ticket_history"))
    assert.equals("TKT-1000", c:value("SELECT ticket_number FROM tickets WHERE search_vector @@ to_tsquery('english', 'vpn')"))
    c:exec("REFRESH MATERIALIZED VIEW CONCURRENTLY ticket_daily_stats")
    -- a prod-like database gets no seed data
    local url2, name2 = H.fresh_db("example_prod")
    assert.is_true(H.orch({ "migrate", "--db", url2, "--env", "prod", "--yes" }).ok)   -- prod is protected
    local p <close> = db.connect(url2)
    assert.equals(0, p:value("SELECT count(*) FROM tickets"))
    assert.equals(4, p:value("SELECT count(*) FROM sla_policies"))
    p:close()
    H.drop_db(name2)
  end)

  it("passes its own lint without errors", function()
    local r = H.orch { "lint", "--json" }
    assert.is_true(r.ok, r.stdout .. r.stderr)
    assert.equals(0, require("orch.json").decode(r.stdout).errors)
  end)
end)
