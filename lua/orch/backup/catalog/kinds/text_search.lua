--- Text search parsers, templates, dictionaries (with their options) and
-- configurations (with their token mappings, ALTER ... ADD MAPPING in the
-- configuration's own entry). Parsers and templates have no owner.
local K = {}

local function parsers(cat)
  for _, r in ipairs(cat:query([[SELECT p.oid, p.prsname, n.nspname, p.prsstart::pg_catalog.regproc::text AS start,
      p.prstoken::pg_catalog.regproc::text AS gettoken, p.prsend::pg_catalog.regproc::text AS "end",
      NULLIF(p.prsheadline, 0)::pg_catalog.regproc::text AS headline, p.prslextype::pg_catalog.regproc::text AS lextypes
    FROM pg_catalog.pg_ts_parser p JOIN pg_catalog.pg_namespace n ON n.oid = p.prsnamespace
    WHERE p.oid >= 16384 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_ts_parser", "p.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(r.nspname, r.prsname)
    local p = { "    START = " .. r.start, "    GETTOKEN = " .. r.gettoken, "    END = " .. r["end"] }
    if r.headline then p[#p + 1] = "    HEADLINE = " .. r.headline end
    p[#p + 1] = "    LEXTYPES = " .. r.lextypes
    cat:add { key = "pg_ts_parser:" .. r.oid, kind = "text_search", desc = "TEXT SEARCH PARSER", tag = r.prsname, namespace = r.nspname,
      defn = string.format("CREATE TEXT SEARCH PARSER %s (\n%s );\n", name, table.concat(p, ",\n")),
      drop = "DROP TEXT SEARCH PARSER " .. name .. ";\n", label = "TEXT SEARCH PARSER " .. name,
      label_tag = "TEXT SEARCH PARSER " .. cat:q(r.prsname) }
  end
end

local function templates(cat)
  for _, r in ipairs(cat:query([[SELECT t.oid, t.tmplname, n.nspname, NULLIF(t.tmplinit, 0)::pg_catalog.regproc::text AS init,
      t.tmpllexize::pg_catalog.regproc::text AS lexize
    FROM pg_catalog.pg_ts_template t JOIN pg_catalog.pg_namespace n ON n.oid = t.tmplnamespace
    WHERE t.oid >= 16384 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_ts_template", "t.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(r.nspname, r.tmplname)
    local p = {}
    if r.init then p[#p + 1] = "    INIT = " .. r.init end
    p[#p + 1] = "    LEXIZE = " .. r.lexize
    cat:add { key = "pg_ts_template:" .. r.oid, kind = "text_search", desc = "TEXT SEARCH TEMPLATE", tag = r.tmplname, namespace = r.nspname,
      defn = string.format("CREATE TEXT SEARCH TEMPLATE %s (\n%s );\n", name, table.concat(p, ",\n")),
      drop = "DROP TEXT SEARCH TEMPLATE " .. name .. ";\n", label = "TEXT SEARCH TEMPLATE " .. name,
      label_tag = "TEXT SEARCH TEMPLATE " .. cat:q(r.tmplname) }
  end
end

local function dictionaries(cat)
  for _, r in ipairs(cat:query([[SELECT dc.oid, dc.dictname, n.nspname, pg_catalog.pg_get_userbyid(dc.dictowner) AS owner,
      pg_catalog.format('%I.%I', tn.nspname, t.tmplname) AS template, dc.dictinitoption
    FROM pg_catalog.pg_ts_dict dc JOIN pg_catalog.pg_namespace n ON n.oid = dc.dictnamespace
    JOIN pg_catalog.pg_ts_template t ON t.oid = dc.dicttemplate JOIN pg_catalog.pg_namespace tn ON tn.oid = t.tmplnamespace
    WHERE dc.oid >= 16384 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_ts_dict", "dc.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(r.nspname, r.dictname)
    cat:add { key = "pg_ts_dict:" .. r.oid, kind = "text_search", desc = "TEXT SEARCH DICTIONARY", tag = r.dictname, namespace = r.nspname,
      owner = r.owner,
      -- the options are kept as the text CREATE took them (name = value, ...)
      defn = string.format("CREATE TEXT SEARCH DICTIONARY %s (\n    TEMPLATE = %s%s );\n", name, r.template,
        r.dictinitoption and (",\n    " .. r.dictinitoption) or ""),
      drop = "DROP TEXT SEARCH DICTIONARY " .. name .. ";\n", label = "TEXT SEARCH DICTIONARY " .. name,
      label_tag = "TEXT SEARCH DICTIONARY " .. cat:q(r.dictname) }
  end
end

local function configurations(cat)
  for _, r in ipairs(cat:query([[SELECT c.oid, c.cfgname, n.nspname, pg_catalog.pg_get_userbyid(c.cfgowner) AS owner, c.cfgparser,
      pg_catalog.format('%I.%I', pn.nspname, p.prsname) AS parser
    FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace
    JOIN pg_catalog.pg_ts_parser p ON p.oid = c.cfgparser JOIN pg_catalog.pg_namespace pn ON pn.oid = p.prsnamespace
    WHERE c.oid >= 16384 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_ts_config", "c.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(r.nspname, r.cfgname)
    local out = { string.format("CREATE TEXT SEARCH CONFIGURATION %s (\n    PARSER = %s );\n", name, r.parser) }
    -- one ADD MAPPING per token type, its dictionaries in order
    local cur, dicts = nil, {}
    local function flush()
      if cur then out[#out + 1] = string.format("\nALTER TEXT SEARCH CONFIGURATION %s\n    ADD MAPPING FOR %s WITH %s;\n", name,
        cat:q(cur), table.concat(dicts, ", ")) end
    end
    for _, m in ipairs(cat:query([[SELECT (SELECT t.alias FROM pg_catalog.ts_token_type($2::pg_catalog.oid) t WHERE t.tokid = m.maptokentype) AS token,
        m.mapdict::pg_catalog.regdictionary::text AS dict
      FROM pg_catalog.pg_ts_config_map m WHERE m.mapcfg = $1 ORDER BY m.maptokentype, m.mapseqno]], r.oid, r.cfgparser)) do
      if m.token ~= cur then flush(); cur, dicts = m.token, {} end
      dicts[#dicts + 1] = m.dict
    end
    flush()
    cat:add { key = "pg_ts_config:" .. r.oid, kind = "text_search", desc = "TEXT SEARCH CONFIGURATION", tag = r.cfgname,
      namespace = r.nspname, owner = r.owner, defn = table.concat(out),
      drop = "DROP TEXT SEARCH CONFIGURATION " .. name .. ";\n", label = "TEXT SEARCH CONFIGURATION " .. name,
      label_tag = "TEXT SEARCH CONFIGURATION " .. cat:q(r.cfgname) }
  end
end

function K.collect(cat)
  parsers(cat)
  templates(cat)
  dictionaries(cat)
  configurations(cat)
end

return K
