--- Operators, operator families and operator classes.
--
-- An operator's COMMUTATOR and NEGATOR are written as OPERATOR(schema.name):
-- the server makes a shell for one not yet defined and fills it in when its
-- own CREATE OPERATOR comes, so pairs that name each other need no order
-- (pg_depend has no rows for them). Shell operators left behind (named as
-- a commutator, never defined) are not written: the operator naming them
-- makes them again.
--
-- A family's members (pg_amop, pg_amproc rows) belong to the operator
-- class whose CREATE OPERATOR CLASS made them, or to the family itself
-- when they were added with ALTER OPERATOR FAMILY ... ADD (or moved there
-- by the access method): those are written in the family's entry. Members
-- are aliases of their owner, so their dependencies on operators and
-- functions order the owner.
local K = {}

local function operators(cat)
  for _, r in ipairs(cat:query([[SELECT o.oid, o.oprname, n.nspname, o.oprkind, o.oprcode::pg_catalog.oid AS code,
      o.oprcode::pg_catalog.regproc::text AS func, pg_catalog.pg_get_userbyid(o.oprowner) AS owner,
      CASE WHEN o.oprleft <> 0 THEN o.oprleft::pg_catalog.regtype::text END AS lefttype,
      CASE WHEN o.oprright <> 0 THEN o.oprright::pg_catalog.regtype::text END AS righttype,
      (SELECT pg_catalog.format('OPERATOR(%I.%s)', cn.nspname, c.oprname) FROM pg_catalog.pg_operator c
         JOIN pg_catalog.pg_namespace cn ON cn.oid = c.oprnamespace WHERE c.oid = o.oprcom) AS commutator,
      (SELECT pg_catalog.format('OPERATOR(%I.%s)', cn.nspname, c.oprname) FROM pg_catalog.pg_operator c
         JOIN pg_catalog.pg_namespace cn ON cn.oid = c.oprnamespace WHERE c.oid = o.oprnegate) AS negator,
      o.oprcanmerge, o.oprcanhash,
      NULLIF(o.oprrest, 0)::pg_catalog.regproc::text AS rest, NULLIF(o.oprjoin, 0)::pg_catalog.regproc::text AS joinsel
    FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
    WHERE ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_operator", "o.oid") .. " ORDER BY n.nspname, o.oprname, o.oid")) do
    local key = "pg_operator:" .. r.oid
    if r.code == 0 then
      cat:cover(key, "a shell operator: the operator naming it as commutator or negator makes it again")
    else
      local p = { "    FUNCTION = " .. r.func }
      if r.lefttype then p[#p + 1] = "    LEFTARG = " .. r.lefttype end
      if r.righttype then p[#p + 1] = "    RIGHTARG = " .. r.righttype end
      if r.commutator then p[#p + 1] = "    COMMUTATOR = " .. r.commutator end
      if r.negator then p[#p + 1] = "    NEGATOR = " .. r.negator end
      if r.oprcanmerge then p[#p + 1] = "    MERGES" end
      if r.oprcanhash then p[#p + 1] = "    HASHES" end
      if r.rest then p[#p + 1] = "    RESTRICT = " .. r.rest end
      if r.joinsel then p[#p + 1] = "    JOIN = " .. r.joinsel end
      local id = string.format("%s (%s, %s)", r.oprname, r.lefttype or "NONE", r.righttype or "NONE")
      local qual = cat:q(r.nspname) .. "." .. id
      cat:add { key = key, kind = "operator", desc = "OPERATOR", tag = r.oprname, namespace = r.nspname, owner = r.owner,
        defn = string.format("CREATE OPERATOR %s.%s (\n%s\n);\n", cat:q(r.nspname), r.oprname, table.concat(p, ",\n")),
        drop = "DROP OPERATOR " .. qual .. ";\n", label = "OPERATOR " .. qual, label_tag = "OPERATOR " .. id }
    end
  end
end

-- The members of families and classes: { [owner key] = { ops = {...}, procs = {...} } }.
local function members(cat)
  local out = {}
  local function slot(k)
    out[k] = out[k] or { ops = {}, procs = {}, keys = {} }
    return out[k]
  end
  for _, r in ipairs(cat:query([[SELECT ao.oid, d.refclassid::pg_catalog.regclass::text AS ownercls, d.refobjid AS ownerid,
      ao.amopstrategy, ao.amopopr::pg_catalog.regoperator::text AS opr,
      (SELECT pg_catalog.format('%I.%I', sn.nspname, sf.opfname) FROM pg_catalog.pg_opfamily sf
         JOIN pg_catalog.pg_namespace sn ON sn.oid = sf.opfnamespace WHERE sf.oid = ao.amopsortfamily) AS sortfamily
    FROM pg_catalog.pg_amop ao JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_amop'::pg_catalog.regclass AND d.objid = ao.oid
    WHERE ao.oid >= 16384 AND d.deptype IN ('a', 'i')
      AND (d.refclassid = 'pg_catalog.pg_opfamily'::pg_catalog.regclass AND d.refobjid = ao.amopfamily
        OR d.refclassid = 'pg_catalog.pg_opclass'::pg_catalog.regclass
           AND ao.amopfamily = (SELECT opcfamily FROM pg_catalog.pg_opclass WHERE oid = d.refobjid))
    ORDER BY ao.amopstrategy, ao.oid]])) do
    local owner = r.ownercls .. ":" .. r.ownerid
    local s = slot(owner)
    s.keys[#s.keys + 1] = "pg_amop:" .. r.oid
    s.ops[#s.ops + 1] = string.format("OPERATOR %d %s%s", r.amopstrategy, r.opr, r.sortfamily and (" FOR ORDER BY " .. r.sortfamily) or "")
  end
  for _, r in ipairs(cat:query([[SELECT ap.oid, d.refclassid::pg_catalog.regclass::text AS ownercls, d.refobjid AS ownerid,
      ap.amprocnum, ap.amproc::pg_catalog.regprocedure::text AS proc,
      ap.amproclefttype::pg_catalog.regtype::text AS lefttype, ap.amprocrighttype::pg_catalog.regtype::text AS righttype
    FROM pg_catalog.pg_amproc ap JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_amproc'::pg_catalog.regclass AND d.objid = ap.oid
    WHERE ap.oid >= 16384 AND d.deptype IN ('a', 'i')
      AND d.refclassid IN ('pg_catalog.pg_opfamily'::pg_catalog.regclass, 'pg_catalog.pg_opclass'::pg_catalog.regclass)
    ORDER BY ap.amprocnum, ap.oid]])) do
    local owner = r.ownercls .. ":" .. r.ownerid
    local s = slot(owner)
    s.keys[#s.keys + 1] = "pg_amproc:" .. r.oid
    s.procs[#s.procs + 1] = string.format("FUNCTION %d (%s, %s) %s", r.amprocnum, r.lefttype, r.righttype, r.proc)
  end
  return out
end

local function families(cat, mem)
  for _, r in ipairs(cat:query([[SELECT f.oid, f.opfname, n.nspname, am.amname, pg_catalog.pg_get_userbyid(f.opfowner) AS owner
    FROM pg_catalog.pg_opfamily f JOIN pg_catalog.pg_namespace n ON n.oid = f.opfnamespace JOIN pg_catalog.pg_am am ON am.oid = f.opfmethod
    WHERE ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_opfamily", "f.oid") .. " ORDER BY n.nspname, f.opfname, am.amname")) do
    local key = "pg_opfamily:" .. r.oid
    local name = cat:qn(r.nspname, r.opfname)
    local using = " USING " .. cat:q(r.amname)
    local defn = "CREATE OPERATOR FAMILY " .. name .. using .. ";\n"
    local m = mem[key]
    if m and (#m.ops > 0 or #m.procs > 0) then
      local all = {}
      for _, x in ipairs(m.ops) do all[#all + 1] = x end
      for _, x in ipairs(m.procs) do all[#all + 1] = x end
      defn = defn .. string.format("ALTER OPERATOR FAMILY %s%s ADD\n    %s;\n", name, using, table.concat(all, " ,\n    "))
    end
    cat:add { key = key, kind = "operator_family", desc = "OPERATOR FAMILY", tag = r.opfname, namespace = r.nspname, owner = r.owner,
      defn = defn, drop = "DROP OPERATOR FAMILY " .. name .. using .. ";\n",
      label = "OPERATOR FAMILY " .. name .. using, label_tag = "OPERATOR FAMILY " .. cat:q(r.opfname) .. using }
  end
end

local function classes(cat, mem)
  for _, r in ipairs(cat:query([[SELECT c.oid, c.opcname, n.nspname, am.amname, pg_catalog.pg_get_userbyid(c.opcowner) AS owner,
      c.opcintype::pg_catalog.regtype::text AS intype, CASE WHEN c.opckeytype <> 0 THEN c.opckeytype::pg_catalog.regtype::text END AS keytype,
      c.opcdefault, pg_catalog.format('%I.%I', fn.nspname, f.opfname) AS family
    FROM pg_catalog.pg_opclass c JOIN pg_catalog.pg_namespace n ON n.oid = c.opcnamespace JOIN pg_catalog.pg_am am ON am.oid = c.opcmethod
    JOIN pg_catalog.pg_opfamily f ON f.oid = c.opcfamily JOIN pg_catalog.pg_namespace fn ON fn.oid = f.opfnamespace
    WHERE ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_opclass", "c.oid") .. " ORDER BY n.nspname, c.opcname, am.amname")) do
    local key = "pg_opclass:" .. r.oid
    local name = cat:qn(r.nspname, r.opcname)
    local using = " USING " .. cat:q(r.amname)
    local items = {}
    if r.keytype then items[#items + 1] = "STORAGE " .. r.keytype end
    local m = mem[key] or { ops = {}, procs = {}, keys = {} }
    for _, x in ipairs(m.ops) do items[#items + 1] = x end
    for _, x in ipairs(m.procs) do items[#items + 1] = x end
    -- a class with no members of its own still needs something after AS
    if #items == 0 then items[1] = "STORAGE " .. r.intype end
    cat:add { key = key, kind = "operator_class", desc = "OPERATOR CLASS", tag = r.opcname, namespace = r.nspname, owner = r.owner,
      defn = string.format("CREATE OPERATOR CLASS %s\n    %sFOR TYPE %s%s FAMILY %s AS\n    %s;\n", name, r.opcdefault and "DEFAULT " or "",
        r.intype, using, r.family, table.concat(items, " ,\n    ")),
      drop = "DROP OPERATOR CLASS " .. name .. using .. ";\n",
      label = "OPERATOR CLASS " .. name .. using, label_tag = "OPERATOR CLASS " .. cat:q(r.opcname) .. using }
  end
end

function K.collect(cat)
  operators(cat)
  local mem = members(cat)
  families(cat, mem)
  classes(cat, mem)
  -- members stand for the family or class that writes them; those of a family or class
  -- orch does not write (a built-in family a user added to) stay unaccounted for, so coverage names them
  for owner, m in pairs(mem) do
    if cat.objects[owner] then
      for _, k in ipairs(m.keys) do cat:alias(k, owner) end
    end
  end
end

return K
