--- An independent judge of a database, for the specs: what its schema and
-- settings are (catalog_of) and what its rows are (contents_of), on every
-- PostgreSQL major from 12 to 18.
--
-- catalog_of reads the server's own catalogs and its pg_get_*def, format_type
-- and pg_identify_object functions, never orch's catalog module: it must be
-- able to catch orch's mistakes. Its text is one line per fact,
--   "<object> | <attribute> = <value>"
-- (a value spanning lines continues on lines indented by four spaces),
-- sorted, with no OID anywhere (they differ between two copies of a database;
-- only large objects are named by theirs, which a dump keeps). Objects that
-- belong to an extension appear as "extension X member <kind> <name>" and are
-- otherwise left to the extension. Two databases are alike for the judge when
-- their texts are equal, and a diff of the texts names what differs.
local J = {}

-- -------------------------------------------------------------------------
-- SQL pieces

-- user schemas only (no user schema may start with pg_)
local USER_NS = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"

-- is the object (catalog, oid expression) a member of an extension?
local function member(catalog, oid)
  return string.format("EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '%s'::regclass AND e.objid = %s AND e.deptype = 'e')",
    catalog, oid)
end

-- an ACL as sorted items; NULL (the default) spelled out as the default
local function acl(col, kind, owner)
  return string.format("(SELECT string_agg(x, ' ' ORDER BY x COLLATE \"C\") FROM unnest(coalesce(%s, acldefault('%s', %s))::text[]) x)",
    col, kind, owner)
end

-- a text[] (options) as sorted items
local function sorted(col)
  return string.format("(SELECT string_agg(x, ', ' ORDER BY x COLLATE \"C\") FROM unnest(%s) x)", col)
end

-- a role name (PUBLIC for 0)
local function role(col)
  return string.format("CASE WHEN %s = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(%s) END", col, col)
end

-- a schema-qualified name from a name column and a namespace oid column
local function qname(nsp, name)
  return string.format("(SELECT format('%%I.%%I', qn.nspname, %s) FROM pg_namespace qn WHERE qn.oid = %s)", name, nsp)
end

local RELKIND = [[CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'partitioned table ' WHEN 'v' THEN 'view '
  WHEN 'm' THEN 'materialized view ' WHEN 'f' THEN 'foreign table ' WHEN 'c' THEN 'composite type '
  WHEN 'S' THEN 'sequence ' WHEN 'i' THEN 'index ' WHEN 'I' THEN 'partitioned index ' END || c.oid::regclass::text]]

-- -------------------------------------------------------------------------
-- The sections: each a function of the server version (server_version_num)
-- returning a query whose first column, obj, names the object and whose other
-- columns are its attributes (NULL ones are left out; columns named _x are
-- for the follow-up queries below, not printed).

local S = {}

S.schemas = function()
  return [[SELECT 'schema ' || quote_ident(n.nspname) AS obj, pg_get_userbyid(n.nspowner) AS owner,
      ]] .. acl("n.nspacl", "n", "n.nspowner") .. [[ AS acl
    FROM pg_namespace n WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_namespace", "n.oid")
end

S.relations = function()
  return "SELECT " .. RELKIND .. [[ AS obj,
      CASE WHEN c.relkind <> 'c' THEN pg_get_userbyid(c.relowner) END AS owner,
      CASE WHEN c.relkind = 'S' THEN ]] .. acl("c.relacl", "s", "c.relowner") .. [[
           WHEN c.relkind <> 'c' THEN ]] .. acl("c.relacl", "r", "c.relowner") .. [[ END AS acl,
      c.relpersistence AS persistence,
      (SELECT amname FROM pg_am WHERE oid = c.relam) AS access_method,
      (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace) AS tablespace,
      ]] .. sorted("c.reloptions") .. [[ AS options,
      (SELECT ]] .. sorted("t.reloptions") .. [[ FROM pg_class t WHERE t.oid = c.reltoastrelid) AS toast_options,
      CASE WHEN c.relkind IN ('r', 'p') THEN c.relreplident END AS replica_identity,
      (SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS replica_identity_index,
      (SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisclustered) AS cluster_on,
      CASE WHEN c.relkind IN ('r', 'p') THEN c.relrowsecurity END AS row_security,
      CASE WHEN c.relkind IN ('r', 'p') THEN c.relforcerowsecurity END AS force_row_security,
      CASE WHEN c.reloftype <> 0 THEN format_type(c.reloftype, NULL) END AS of_type,
      CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
      CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS partition_bound,
      (SELECT string_agg(h.inhparent::regclass::text, ', ' ORDER BY h.inhseqno) FROM pg_inherits h WHERE h.inhrelid = c.oid) AS inherits,
      CASE WHEN c.relkind = 'm' THEN c.relispopulated END AS populated,
      CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS definition,
      (SELECT quote_ident(s.srvname) FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = c.oid) AS server,
      (SELECT ]] .. sorted("ft.ftoptions") .. [[ FROM pg_foreign_table ft WHERE ft.ftrelid = c.oid) AS fdw_options
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c', 'S') AND ]] .. USER_NS .. " AND NOT " .. member("pg_class", "c.oid")
end

S.columns = function(v)
  return "SELECT " .. RELKIND .. [[ || ' column ' || quote_ident(a.attname) AS obj,
      row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS position,
      format_type(a.atttypid, a.atttypmod) AS type,
      CASE WHEN a.attcollation <> t.typcollation THEN ]] .. qname("co.collnamespace", "co.collname") .. [[ END AS collation,
      a.attnotnull AS not_null,
      pg_get_expr(ad.adbin, ad.adrelid) AS default,
      NULLIF(a.attidentity, '') AS identity,
      NULLIF(a.attgenerated, '') AS generated,
      a.attstorage AS storage,
      ]] .. (v >= 140000 and "NULLIF(a.attcompression, '')" or "NULL::text") .. [[ AS compression,
      NULLIF(coalesce(a.attstattarget, -1), -1) AS statistics,
      ]] .. sorted("a.attoptions") .. [[ AS options,
      (SELECT string_agg(x, ' ' ORDER BY x COLLATE "C") FROM unnest(a.attacl::text[]) x) AS acl,
      ]] .. sorted("a.attfdwoptions") .. [[ AS fdw_options,
      a.attislocal AS local, a.attinhcount AS inherited
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_collation co ON co.oid = a.attcollation
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
      AND ]] .. USER_NS .. " AND NOT " .. member("pg_class", "c.oid")
end

S.index_columns = function()
  -- only what an index column can be given: a statistics target
  return "SELECT " .. RELKIND .. [[ || ' column ' || a.attnum AS obj, a.attstattarget AS statistics
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attnum > 0 AND c.relkind IN ('i', 'I') AND coalesce(a.attstattarget, -1) >= 0 AND ]] .. USER_NS
end

S.sequences = function()
  return [[SELECT 'sequence ' || c.oid::regclass::text AS obj, c.oid::regclass::text AS _seq,
      format_type(s.seqtypid, NULL) AS type, s.seqstart AS start, s.seqincrement AS increment,
      s.seqmin AS min, s.seqmax AS max, s.seqcache AS cache, s.seqcycle AS cycle,
      (SELECT format('%s.%I', d.refobjid::regclass, a.attname) || CASE d.deptype WHEN 'i' THEN ' (identity)' ELSE '' END
         FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
           AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0) AS owned_by
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_class", "c.oid")
end

S.constraints = function(v)
  return [[SELECT 'constraint ' || quote_ident(k.conname) || ' on ' ||
        CASE WHEN k.conrelid <> 0 THEN k.conrelid::regclass::text ELSE 'domain ' || format_type(k.contypid, NULL) END AS obj,
      k.contype AS type, pg_get_constraintdef(k.oid) AS definition,
      k.condeferrable AS deferrable, k.condeferred AS deferred, k.convalidated AS validated,
      k.conislocal AS local, k.coninhcount AS inherited,
      -- NO INHERIT means something only for CHECK and NOT NULL constraints; on a
      -- partition's key it records whether the key came from its parent's
      -- ADD or was attached, which pg_dump -> pg_restore does not keep either
      CASE WHEN k.contype IN ('c', 'n') THEN k.connoinherit END AS no_inherit,
      ]] .. (v >= 180000 and "k.conenforced" or "NULL::bool") .. [[ AS enforced,
      (SELECT quote_ident(p.conname) || ' on ' || p.conrelid::regclass::text FROM pg_constraint p WHERE p.oid = k.conparentid) AS partition_of
    FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
    WHERE ]] .. USER_NS .. [[ AND NOT (k.conrelid <> 0 AND ]] .. member("pg_class", "k.conrelid") .. [[)
      AND NOT (k.contypid <> 0 AND ]] .. member("pg_type", "k.contypid") .. ")"
end

S.indexes = function()
  return [[SELECT CASE ic.relkind WHEN 'I' THEN 'partitioned index ' ELSE 'index ' END || i.indexrelid::regclass::text AS obj,
      pg_get_indexdef(i.indexrelid) AS definition,
      (SELECT spcname FROM pg_tablespace WHERE oid = ic.reltablespace) AS tablespace,
      i.indisclustered AS clustered, i.indisreplident AS replica_identity, i.indisvalid AS valid,
      (SELECT h.inhparent::regclass::text FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) AS partition_of,
      (SELECT quote_ident(k.conname) FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
         AND k.contype IN ('p', 'u', 'x')) AS constraint_of
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_class", "i.indrelid")
end

S.triggers = function(v)
  -- a partition's copy of its parent's trigger: tgparentid from 13; on 12
  -- an internal trigger tied to the parent's in pg_depend (deptype P)
  local parent = v >= 130000 and "(SELECT u.tgrelid::regclass::text FROM pg_trigger u WHERE u.oid = t.tgparentid)"
    or [[(SELECT u.tgrelid::regclass::text FROM pg_depend d JOIN pg_trigger u ON u.oid = d.refobjid
          WHERE d.classid = 'pg_trigger'::regclass AND d.objid = t.oid AND d.refclassid = 'pg_trigger'::regclass
            AND d.deptype = 'P')]]
  return [[SELECT * FROM (SELECT 'trigger ' || quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text AS obj,
      pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled, ]] .. parent .. [[ AS clone_of, t.tgisinternal AS _internal
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_class", "c.oid") .. [[
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.oid = t.tgconstraint AND k.contype = 'f')) x
    WHERE NOT _internal OR clone_of IS NOT NULL]]
end

S.rules = function()
  return [[SELECT 'rule ' || quote_ident(r.rulename) || ' on ' || r.ev_class::regclass::text AS obj,
      pg_get_ruledef(r.oid) AS definition, r.ev_enabled AS enabled
    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE r.rulename <> '_RETURN' AND ]] .. USER_NS .. " AND NOT " .. member("pg_class", "c.oid")
end

S.policies = function()
  return [[SELECT 'policy ' || quote_ident(p.polname) || ' on ' || p.polrelid::regclass::text AS obj,
      p.polcmd AS command, p.polpermissive AS permissive,
      (SELECT string_agg(x, ', ' ORDER BY x COLLATE "C") FROM (SELECT ]] .. role("r") .. [[ AS x FROM unnest(p.polroles) r) rs) AS roles,
      pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_class", "c.oid")
end

-- types a user made: not array types, not the row types of tables and views,
-- not the multirange type that comes with a range (shown with the range)
local USER_TYPE = [[ AND NOT EXISTS (SELECT 1 FROM pg_type el WHERE el.typarray = t.oid)
      AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') AND t.typtype <> 'm'
      AND ]] .. USER_NS .. " AND NOT " .. member("pg_type", "t.oid")

S.types = function()
  return [[SELECT CASE t.typtype WHEN 'b' THEN 'base type ' WHEN 'c' THEN 'composite type ' WHEN 'd' THEN 'domain '
        WHEN 'e' THEN 'enum type ' WHEN 'r' THEN 'range type ' WHEN 'p' THEN 'pseudo type ' ELSE t.typtype::text || ' type ' END
        || format_type(t.oid, NULL) AS obj,
      pg_get_userbyid(t.typowner) AS owner, ]] .. acl("t.typacl", "T", "t.typowner") .. [[ AS acl,
      CASE WHEN NOT t.typisdefined THEN 'shell' END AS state
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE true]] .. USER_TYPE
end

S.base_types = function(v)
  return [[SELECT 'base type ' || format_type(t.oid, NULL) AS obj,
      t.typinput::regproc::text AS input, t.typoutput::regproc::text AS output, t.typreceive::regproc::text AS receive,
      t.typsend::regproc::text AS send, t.typmodin::regproc::text AS typmod_in, t.typmodout::regproc::text AS typmod_out,
      t.typanalyze::regproc::text AS analyze, ]] .. (v >= 140000 and "t.typsubscript::regproc::text" or "NULL::text") .. [[ AS subscript,
      t.typlen AS internallength, t.typbyval AS passedbyvalue, t.typalign AS alignment, t.typstorage AS storage,
      t.typcategory AS category, t.typispreferred AS preferred, t.typdelim AS delimiter,
      CASE WHEN t.typelem <> 0 THEN format_type(t.typelem, NULL) END AS element,
      t.typdefault AS default, t.typcollation <> 0 AS collatable,
      CASE WHEN t.typarray <> 0 THEN format_type(t.typarray, NULL) END AS array_type
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'b' AND t.typisdefined]] .. USER_TYPE
end

S.enums = function()
  return [[SELECT 'enum type ' || format_type(t.oid, NULL) AS obj,
      (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) AS labels
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'e']] .. USER_TYPE
end

S.ranges = function(v)
  return [[SELECT 'range type ' || format_type(t.oid, NULL) AS obj,
      format_type(r.rngsubtype, NULL) AS subtype,
      ]] .. qname("co.collnamespace", "co.collname") .. [[ AS collation,
      ]] .. qname("oc.opcnamespace", "oc.opcname") .. [[ AS subtype_opclass,
      r.rngcanonical::regproc::text AS canonical, r.rngsubdiff::regproc::text AS subtype_diff,
      ]] .. (v >= 140000 and "format_type(r.rngmultitypid, NULL)" or "NULL::text") .. [[ AS multirange
    FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid JOIN pg_namespace n ON n.oid = t.typnamespace
      LEFT JOIN pg_collation co ON co.oid = r.rngcollation LEFT JOIN pg_opclass oc ON oc.oid = r.rngsubopc
    WHERE true]] .. USER_TYPE
end

S.domains = function()
  return [[SELECT 'domain ' || format_type(t.oid, NULL) AS obj,
      format_type(t.typbasetype, t.typtypmod) AS base_type, t.typnotnull AS not_null, t.typdefault AS default,
      CASE WHEN t.typcollation <> b.typcollation THEN ]] .. qname("co.collnamespace", "co.collname") .. [[ END AS collation
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_type b ON b.oid = t.typbasetype
      LEFT JOIN pg_collation co ON co.oid = t.typcollation
    WHERE t.typtype = 'd']] .. USER_TYPE
end

S.functions = function()
  return [[SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'w' THEN 'window function ' ELSE 'function ' END
        || p.oid::regprocedure::text AS obj,
      pg_get_userbyid(p.proowner) AS owner, ]] .. acl("p.proacl", "f", "p.proowner") .. [[ AS acl,
      pg_get_functiondef(p.oid) AS definition
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.prokind <> 'a' AND ]] .. USER_NS .. " AND NOT " .. member("pg_proc", "p.oid")
end

S.aggregates = function()
  return [[SELECT 'aggregate ' || p.oid::regprocedure::text AS obj,
      pg_get_userbyid(p.proowner) AS owner, ]] .. acl("p.proacl", "f", "p.proowner") .. [[ AS acl,
      pg_get_function_arguments(p.oid) AS arguments, pg_get_function_result(p.oid) AS result,
      p.proparallel AS parallel, a.aggkind AS kind, a.aggnumdirectargs AS direct_arguments,
      a.aggtransfn::regproc::text AS sfunc, format_type(a.aggtranstype, NULL) AS stype, a.aggtransspace AS sspace,
      a.aggfinalfn::regproc::text AS finalfunc, a.aggfinalextra AS finalfunc_extra, a.aggfinalmodify AS finalfunc_modify,
      a.aggcombinefn::regproc::text AS combinefunc, a.aggserialfn::regproc::text AS serialfunc,
      a.aggdeserialfn::regproc::text AS deserialfunc, a.agginitval AS initcond,
      a.aggmtransfn::regproc::text AS msfunc, a.aggminvtransfn::regproc::text AS minvfunc,
      format_type(a.aggmtranstype, NULL) AS mstype, a.aggmtransspace AS msspace,
      a.aggmfinalfn::regproc::text AS mfinalfunc, a.aggmfinalextra AS mfinalfunc_extra,
      a.aggmfinalmodify AS mfinalfunc_modify, a.aggminitval AS minitcond, a.aggsortop::regoperator::text AS sortop
    FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_proc", "p.oid")
end

S.operators = function()
  return [[SELECT 'operator ' || o.oid::regoperator::text AS obj, pg_get_userbyid(o.oprowner) AS owner,
      o.oprkind AS kind, o.oprcode::regproc::text AS function, format_type(o.oprresult, NULL) AS result,
      o.oprcom::regoperator::text AS commutator, o.oprnegate::regoperator::text AS negator,
      o.oprrest::regproc::text AS restrict, o.oprjoin::regproc::text AS join, o.oprcanmerge AS merges, o.oprcanhash AS hashes
    FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_operator", "o.oid")
end

local FAMILY = "'operator family ' || format('%I.%I', n.nspname, f.opfname) || ' using ' || quote_ident(am.amname)"
local USER_FAMILY = " FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod WHERE " ..
  USER_NS .. " AND NOT " .. member("pg_opfamily", "f.oid")

S.opfamilies = function()
  return "SELECT " .. FAMILY .. " AS obj, pg_get_userbyid(f.opfowner) AS owner" .. USER_FAMILY
end

S.opfamily_operators = function()
  return "SELECT " .. FAMILY .. [[ || ' operator ' || o.amopstrategy || ' (' || format_type(o.amoplefttype, NULL) || ', '
        || format_type(o.amoprighttype, NULL) || ')' AS obj,
      o.amopopr::regoperator::text AS operator, o.amoppurpose AS purpose,
      (SELECT format('%I.%I', sn.nspname, sf.opfname) FROM pg_opfamily sf JOIN pg_namespace sn ON sn.oid = sf.opfnamespace
         WHERE sf.oid = o.amopsortfamily) AS order_by
    FROM pg_amop o JOIN pg_opfamily f ON f.oid = o.amopfamily JOIN pg_namespace n ON n.oid = f.opfnamespace
      JOIN pg_am am ON am.oid = f.opfmethod
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_opfamily", "f.oid")
end

S.opfamily_functions = function()
  return "SELECT " .. FAMILY .. [[ || ' function ' || p.amprocnum || ' (' || format_type(p.amproclefttype, NULL) || ', '
        || format_type(p.amprocrighttype, NULL) || ')' AS obj, p.amproc::regprocedure::text AS function
    FROM pg_amproc p JOIN pg_opfamily f ON f.oid = p.amprocfamily JOIN pg_namespace n ON n.oid = f.opfnamespace
      JOIN pg_am am ON am.oid = f.opfmethod
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_opfamily", "f.oid")
end

S.opclasses = function()
  return [[SELECT 'operator class ' || format('%I.%I', n.nspname, c.opcname) || ' using ' || quote_ident(am.amname) AS obj,
      pg_get_userbyid(c.opcowner) AS owner, format_type(c.opcintype, NULL) AS for_type, c.opcdefault AS default,
      ]] .. qname("f.opfnamespace", "f.opfname") .. [[ AS family,
      CASE WHEN c.opckeytype <> 0 THEN format_type(c.opckeytype, NULL) END AS storage
    FROM pg_opclass c JOIN pg_namespace n ON n.oid = c.opcnamespace JOIN pg_am am ON am.oid = c.opcmethod
      JOIN pg_opfamily f ON f.oid = c.opcfamily
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_opclass", "c.oid")
end

S.casts = function()
  -- not the casts PostgreSQL makes by itself (range to multirange: deptype i)
  return [[SELECT 'cast (' || format_type(c.castsource, NULL) || ' AS ' || format_type(c.casttarget, NULL) || ')' AS obj,
      c.castfunc::regprocedure::text AS function, c.castcontext AS context, c.castmethod AS method
    FROM pg_cast c WHERE c.oid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_cast'::regclass AND d.objid = c.oid AND d.deptype IN ('e', 'i'))]]
end

S.collations = function(v)
  local locale = v >= 170000 and "c.colllocale" or v >= 150000 and "c.colliculocale" or "NULL::text"
  return [[SELECT 'collation ' || format('%I.%I', n.nspname, c.collname) AS obj, pg_get_userbyid(c.collowner) AS owner,
      c.collprovider AS provider, c.collisdeterministic AS deterministic,
      CASE WHEN c.collencoding >= 0 THEN pg_encoding_to_char(c.collencoding) END AS encoding,
      c.collcollate AS lc_collate, c.collctype AS lc_ctype, ]] .. locale .. [[ AS locale,
      ]] .. (v >= 160000 and "c.collicurules" or "NULL::text") .. [[ AS rules
    FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_collation", "c.oid")
end

S.conversions = function()
  return [[SELECT 'conversion ' || format('%I.%I', n.nspname, c.conname) AS obj, pg_get_userbyid(c.conowner) AS owner,
      pg_encoding_to_char(c.conforencoding) AS source_encoding, pg_encoding_to_char(c.contoencoding) AS dest_encoding,
      c.conproc::regproc::text AS function, c.condefault AS default
    FROM pg_conversion c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_conversion", "c.oid")
end

S.languages = function()
  return [[SELECT 'language ' || quote_ident(l.lanname) AS obj, pg_get_userbyid(l.lanowner) AS owner,
      ]] .. acl("l.lanacl", "l", "l.lanowner") .. [[ AS acl, l.lanpltrusted AS trusted,
      l.lanplcallfoid::regprocedure::text AS handler, l.laninline::regprocedure::text AS inline,
      l.lanvalidator::regprocedure::text AS validator
    FROM pg_language l WHERE l.oid >= 16384 AND NOT ]] .. member("pg_language", "l.oid")
end

S.transforms = function()
  return [[SELECT 'transform for ' || format_type(t.trftype, NULL) || ' language ' || quote_ident(l.lanname) AS obj,
      t.trffromsql::regprocedure::text AS from_sql, t.trftosql::regprocedure::text AS to_sql
    FROM pg_transform t JOIN pg_language l ON l.oid = t.trflang
    WHERE t.oid >= 16384 AND NOT ]] .. member("pg_transform", "t.oid")
end

S.access_methods = function()
  return [[SELECT 'access method ' || quote_ident(a.amname) AS obj, a.amtype AS type, a.amhandler::regproc::text AS handler
    FROM pg_am a WHERE a.oid >= 16384 AND NOT ]] .. member("pg_am", "a.oid")
end

S.ts_parsers = function()
  return [[SELECT 'text search parser ' || format('%I.%I', n.nspname, p.prsname) AS obj,
      p.prsstart::regproc::text AS start, p.prstoken::regproc::text AS gettoken, p.prsend::regproc::text AS "end",
      p.prsheadline::regproc::text AS headline, p.prslextype::regproc::text AS lextypes
    FROM pg_ts_parser p JOIN pg_namespace n ON n.oid = p.prsnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_ts_parser", "p.oid")
end

S.ts_templates = function()
  return [[SELECT 'text search template ' || format('%I.%I', n.nspname, t.tmplname) AS obj,
      t.tmplinit::regproc::text AS init, t.tmpllexize::regproc::text AS lexize
    FROM pg_ts_template t JOIN pg_namespace n ON n.oid = t.tmplnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_ts_template", "t.oid")
end

S.ts_dictionaries = function()
  return [[SELECT 'text search dictionary ' || format('%I.%I', n.nspname, d.dictname) AS obj,
      pg_get_userbyid(d.dictowner) AS owner, ]] .. qname("t.tmplnamespace", "t.tmplname") .. [[ AS template,
      d.dictinitoption AS options
    FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace JOIN pg_ts_template t ON t.oid = d.dicttemplate
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_ts_dict", "d.oid")
end

S.ts_configs = function()
  return [[SELECT 'text search configuration ' || format('%I.%I', n.nspname, c.cfgname) AS obj,
      pg_get_userbyid(c.cfgowner) AS owner, ]] .. qname("p.prsnamespace", "p.prsname") .. [[ AS parser
    FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace JOIN pg_ts_parser p ON p.oid = c.cfgparser
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_ts_config", "c.oid")
end

S.ts_config_maps = function()
  return [[SELECT 'text search configuration ' || format('%I.%I', n.nspname, c.cfgname) || ' mapping '
        || (SELECT tt.alias FROM ts_token_type(c.cfgparser) tt WHERE tt.tokid = m.maptokentype) AS obj,
      string_agg(]] .. qname("d.dictnamespace", "d.dictname") .. [[, ', ' ORDER BY m.mapseqno) AS dictionaries
    FROM pg_ts_config_map m JOIN pg_ts_config c ON c.oid = m.mapcfg JOIN pg_namespace n ON n.oid = c.cfgnamespace
      JOIN pg_ts_dict d ON d.oid = m.mapdict
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_ts_config", "c.oid") .. [[
    GROUP BY n.nspname, c.cfgname, c.cfgparser, m.maptokentype]]
end

S.extensions = function()
  return [[SELECT 'extension ' || quote_ident(e.extname) AS obj, e.extversion AS version, quote_ident(n.nspname) AS schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace]]
end

S.extension_config = function()
  -- the tables (and sequences) an extension marked for dumping; rows below
  return [[SELECT 'extension ' || quote_ident(e.extname) || ' configuration ' || u.cfg::regclass::text AS obj,
      e.extcondition[u.i] AS condition, u.cfg::regclass::text AS _rel, (SELECT relkind FROM pg_class WHERE oid = u.cfg) AS _kind
    FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(cfg, i)]]
end

S.extension_members = function()
  -- a member's privileges are left to the extension unless someone changed
  -- them afterwards (pg_init_privs keeps what the extension script left)
  local current = [[CASE d.classid WHEN 'pg_class'::regclass THEN (SELECT relacl FROM pg_class WHERE oid = d.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT proacl FROM pg_proc WHERE oid = d.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typacl FROM pg_type WHERE oid = d.objid)
      WHEN 'pg_namespace'::regclass THEN (SELECT nspacl FROM pg_namespace WHERE oid = d.objid) END]]
  local initial = [[(SELECT ip.initprivs FROM pg_init_privs ip WHERE ip.classoid = d.classid AND ip.objoid = d.objid
      AND ip.objsubid = 0)]]
  return [[SELECT 'extension ' || quote_ident(x.extname) || ' member ' || (pg_identify_object(d.classid, d.objid, 0)).type
        || ' ' || (pg_identify_object(d.classid, d.objid, 0)).identity AS obj,
      CASE WHEN (SELECT array_agg(a ORDER BY a COLLATE "C") FROM unnest(]] .. current .. [[::text[]) a)
             IS DISTINCT FROM (SELECT array_agg(a ORDER BY a COLLATE "C") FROM unnest(]] .. initial .. [[::text[]) a)
           THEN coalesce((SELECT string_agg(a, ' ' ORDER BY a COLLATE "C") FROM unnest(]] .. current .. [[::text[]) a), 'default')
      END AS acl_changed_after_create
    FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e']]
end

S.event_triggers = function()
  return [[SELECT 'event trigger ' || quote_ident(t.evtname) AS obj, pg_get_userbyid(t.evtowner) AS owner,
      t.evtevent AS event, t.evtfoid::regproc::text AS function, t.evtenabled AS enabled,
      ]] .. sorted("t.evttags") .. [[ AS tags
    FROM pg_event_trigger t WHERE NOT ]] .. member("pg_event_trigger", "t.oid")
end

S.fdws = function()
  return [[SELECT 'foreign-data wrapper ' || quote_ident(w.fdwname) AS obj, pg_get_userbyid(w.fdwowner) AS owner,
      ]] .. acl("w.fdwacl", "F", "w.fdwowner") .. [[ AS acl, w.fdwhandler::regproc::text AS handler,
      w.fdwvalidator::regproc::text AS validator, ]] .. sorted("w.fdwoptions") .. [[ AS options
    FROM pg_foreign_data_wrapper w WHERE NOT ]] .. member("pg_foreign_data_wrapper", "w.oid")
end

S.servers = function()
  return [[SELECT 'server ' || quote_ident(s.srvname) AS obj, pg_get_userbyid(s.srvowner) AS owner,
      ]] .. acl("s.srvacl", "S", "s.srvowner") .. [[ AS acl, quote_ident(w.fdwname) AS wrapper,
      s.srvtype AS type, s.srvversion AS version, ]] .. sorted("s.srvoptions") .. [[ AS options
    FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
    WHERE NOT ]] .. member("pg_foreign_server", "s.oid")
end

S.user_mappings = function()
  return [[SELECT 'user mapping for ' || ]] .. role("u.umuser") .. [[ || ' server ' || quote_ident(s.srvname) AS obj,
      ]] .. sorted("u.umoptions") .. [[ AS options
    FROM pg_user_mapping u JOIN pg_foreign_server s ON s.oid = u.umserver]]
end

S.publications = function(v)
  return [[SELECT 'publication ' || quote_ident(p.pubname) AS obj, pg_get_userbyid(p.pubowner) AS owner,
      p.puballtables AS all_tables, p.pubinsert AS insert, p.pubupdate AS update, p.pubdelete AS delete,
      p.pubtruncate AS truncate, ]] .. (v >= 130000 and "p.pubviaroot" or "NULL::bool") .. [[ AS via_root,
      ]] .. (v >= 180000 and "p.pubgencols::text" or "NULL::text") .. [[ AS generated_columns
    FROM pg_publication p]]
end

S.publication_tables = function(v)
  return [[SELECT 'publication ' || quote_ident(p.pubname) || ' table ' || r.prrelid::regclass::text AS obj,
      ]] .. (v >= 150000 and [[pg_get_expr(r.prqual, r.prrelid) AS "where",
      (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs)) AS columns]] or "NULL::text AS \"where\"") .. [[
    FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid]]
end

S.publication_schemas = function(v)
  if v < 150000 then return nil end
  return [[SELECT 'publication ' || quote_ident(p.pubname) || ' schema ' || quote_ident(n.nspname) AS obj
    FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid]]
end

S.subscriptions = function(v)
  local cols = { "s.subenabled AS enabled", "s.subconninfo AS conninfo", "s.subslotname AS slot_name",
    "s.subsynccommit AS synchronous_commit", sorted("s.subpublications") .. " AS publications" }
  if v >= 140000 then cols[#cols + 1] = "s.subbinary AS binary"; cols[#cols + 1] = "s.substream::text AS streaming" end
  if v >= 150000 then cols[#cols + 1] = "s.subtwophasestate AS two_phase"; cols[#cols + 1] = "s.subdisableonerr AS disable_on_error" end
  if v >= 160000 then
    cols[#cols + 1] = "s.suborigin AS origin"; cols[#cols + 1] = "s.subpasswordrequired AS password_required"
    cols[#cols + 1] = "s.subrunasowner AS run_as_owner"
  end
  if v >= 170000 then cols[#cols + 1] = "s.subfailover AS failover" end
  return [[SELECT 'subscription ' || quote_ident(s.subname) AS obj, pg_get_userbyid(s.subowner) AS owner, ]] ..
    table.concat(cols, ", ") .. [[
    FROM pg_subscription s WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())]]
end

S.statistics = function(v)
  return [[SELECT 'statistics ' || format('%I.%I', n.nspname, s.stxname) AS obj, pg_get_userbyid(s.stxowner) AS owner,
      pg_get_statisticsobjdef(s.oid) AS definition,
      ]] .. (v >= 130000 and "NULLIF(coalesce(s.stxstattarget, -1), -1)" or "NULL::int") .. [[ AS statistics
    FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
    WHERE ]] .. USER_NS .. " AND NOT " .. member("pg_class", "s.stxrelid")
end

S.default_privileges = function()
  return [[SELECT 'default privileges for role ' || pg_get_userbyid(d.defaclrole)
        || CASE WHEN d.defaclnamespace <> 0 THEN ' in schema ' || quote_ident(n.nspname) ELSE '' END
        || ' on ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                      WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END AS obj,
      (SELECT string_agg(x, ' ' ORDER BY x COLLATE "C") FROM unnest(d.defaclacl::text[]) x) AS acl
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace]]
end

S.large_objects = function()
  return [[SELECT 'large object ' || m.oid AS obj, pg_get_userbyid(m.lomowner) AS owner,
      ]] .. acl("m.lomacl", "L", "m.lomowner") .. [[ AS acl,
      length(lo_get(m.oid)) AS bytes, md5(lo_get(m.oid)) AS md5
    FROM pg_largeobject_metadata m]]
end

-- objects a user made (OID past initdb's), the public schema, large objects;
-- not extension members (nor their columns)
local USER_OBJECT = [[(o.objoid >= 16384 OR o.classoid = 'pg_largeobject'::regclass
        OR (o.classoid = 'pg_namespace'::regclass AND o.objoid = 'public'::regnamespace))
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = o.classoid AND e.objid = o.objoid AND e.deptype = 'e')]]

S.comments = function()
  return [[SELECT 'comment on ' || (pg_identify_object(o.classoid, o.objoid, o.objsubid)).type || ' '
        || (pg_identify_object(o.classoid, o.objoid, o.objsubid)).identity AS obj, o.description AS text
    FROM pg_description o WHERE ]] .. USER_OBJECT
end

S.security_labels = function()
  return [[SELECT 'security label ' || quote_ident(o.provider) || ' on ' || (pg_identify_object(o.classoid, o.objoid, o.objsubid)).type
        || ' ' || (pg_identify_object(o.classoid, o.objoid, o.objsubid)).identity AS obj, o.label
    FROM pg_seclabel o WHERE ]] .. USER_OBJECT .. [[
    UNION ALL
    SELECT 'security label ' || quote_ident(s.provider) || ' on this database', s.label
    FROM pg_shseclabel s WHERE s.classoid = 'pg_database'::regclass
      AND s.objoid = (SELECT oid FROM pg_database WHERE datname = current_database())]]
end

S.database = function()
  -- this database's settings (for everyone and per role) and its comment; not
  -- its name, which differs between a database and its restored copy
  return [[SELECT 'database setting' || CASE WHEN s.setrole <> 0 THEN ' for role ' || pg_get_userbyid(s.setrole) ELSE '' END
        || ' ' || split_part(x, '=', 1) AS obj, substr(x, strpos(x, '=') + 1) AS value
    FROM pg_db_role_setting s, unnest(s.setconfig) x
    WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT 'database comment', d.description FROM pg_shdescription d
    WHERE d.classoid = 'pg_database'::regclass AND d.objoid = (SELECT oid FROM pg_database WHERE datname = current_database())]]
end

-- the order the sections are read in (the text is sorted anyway)
local ORDER = { "schemas", "relations", "columns", "index_columns", "sequences", "constraints", "indexes", "triggers",
  "rules", "policies", "types", "base_types", "enums", "ranges", "domains", "functions", "aggregates", "operators",
  "opfamilies", "opfamily_operators", "opfamily_functions", "opclasses", "casts", "collations", "conversions",
  "languages", "transforms", "access_methods", "ts_parsers", "ts_templates", "ts_dictionaries", "ts_configs",
  "ts_config_maps", "extensions", "extension_config", "extension_members", "event_triggers", "fdws", "servers",
  "user_mappings", "publications", "publication_tables", "publication_schemas", "subscriptions", "statistics",
  "default_privileges", "large_objects", "comments", "security_labels", "database" }

-- -------------------------------------------------------------------------

-- Fixed output settings, so values print alike whatever the database, the
-- role or the environment says; only pg_catalog on the search path, so every
-- name a pg_get_*def, regclass or format_type prints is schema-qualified.
local PINNED = {
  { "search_path", "pg_catalog" }, { "DateStyle", "ISO, MDY" }, { "IntervalStyle", "postgres" },
  { "extra_float_digits", "3" }, { "TimeZone", "UTC" }, { "bytea_output", "hex" }, { "lc_monetary", "C" },
  { "lc_numeric", "C" }, { "standard_conforming_strings", "on" }, { "row_security", "off" },
  { "statement_timeout", "0" }, { "lock_timeout", "0" },
}

-- a text[] literal of Lua strings
local function pg_array(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = '"' .. v:gsub('[\\"]', "\\%0") .. '"' end
  return "{" .. table.concat(out, ",") .. "}"
end

--- Run fn(conn) with the session pinned to the judge's output settings
-- (PINNED); the session's own values are put back afterwards, so a spec's
-- connection (inside a transaction or not) goes on as it was.
function J.pinned(conn, fn)
  local names, values = {}, {}
  for i, p in ipairs(PINNED) do names[i], values[i] = p[1], p[2] end
  local set = "SELECT pg_catalog.set_config(n, v, false) FROM unnest($1::text[], $2::text[]) AS s(n, v)"
  local saved = conn:value("SELECT array_agg(pg_catalog.current_setting(n) ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY AS s(n, i)",
    "{" .. table.concat(names, ",") .. "}")
  conn:query(set, "{" .. table.concat(names, ",") .. "}", pg_array(values))
  local ok, res = pcall(fn, conn)
  -- (fails harmlessly in a transaction the error aborted: its rollback restores them)
  pcall(conn.query, conn, set, "{" .. table.concat(names, ",") .. "}", saved)
  if not ok then error(res, 0) end
  return res
end

local function text_of(v)
  if type(v) == "boolean" then return v and "true" or "false" end
  if math.type(v) == "float" and v == math.floor(v) and v > -1e15 and v < 1e15 then return string.format("%d", v) end
  local s = tostring(v):gsub("\n+$", "")
  if s == "" then return '""' end
  return (s:gsub("\n", "\n    "))
end

-- the rows of one table, as a checksum over their text in C order
local function rows_digest(conn, rel)
  local r = conn:query(string.format([[SELECT count(*) AS n, coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE "C")), 'empty') AS md5
    FROM %s t]], rel))[1]
  return r.n .. " rows, md5 " .. r.md5
end

local function sequence_state(conn, rel)
  local r = conn:query(string.format("SELECT last_value, is_called FROM %s", rel))[1]
  return tostring(r.last_value) .. (r.is_called and " (called)" or " (not called)")
end

-- The sections' statements, prepared once per connection (a judge reads a
-- database many times in a spec; planning them is most of the cost).
local prepared = setmetatable({}, { __mode = "k" })
local function section_rows(conn, name, sql)
  local done = prepared[conn]
  if not done then done = {}; prepared[conn] = done end
  local stmt = "orch_judge_" .. name
  if not done[name] then
    if not conn:value("SELECT 1 FROM pg_prepared_statements WHERE name = $1", stmt) then
      conn:exec("PREPARE " .. stmt .. " AS " .. sql)
    end
    done[name] = true
  end
  return conn:query("EXECUTE " .. stmt)
end

local function catalog(conn)
  local v = math.tointeger(tonumber(conn:value("SHOW server_version_num")))
  local lines = {}
  local function add(obj, attr, value)
    lines[#lines + 1] = obj .. " | " .. attr .. " = " .. text_of(value)
  end
  for _, name in ipairs(ORDER) do
    local sql = S[name](v)
    if sql then
      local ok, rows = pcall(section_rows, conn, name, sql)
      if not ok then
        error(string.format("the judge's query for %s failed on server_version_num %d: %s", name, v, tostring(rows)), 0)
      end
      local has = {}
      for _, col in ipairs(rows.columns) do has[col] = true end
      for _, row in ipairs(rows) do
        local obj = assert(row.obj, "a judge query returned no obj")
        local n = 0
        for _, col in ipairs(rows.columns) do
          if col ~= "obj" and col:sub(1, 1) ~= "_" and row[col] ~= nil then
            add(obj, col, row[col])
            n = n + 1
          end
        end
        if has._seq then add(obj, "state", sequence_state(conn, row._seq)); n = n + 1 end
        if has._rel then
          add(obj, "contents", row._kind == "S" and sequence_state(conn, row._rel) or rows_digest(conn, row._rel))
          n = n + 1
        end
        if n == 0 then lines[#lines + 1] = obj end
      end
    end
  end
  table.sort(lines)
  return table.concat(lines, "\n") .. "\n"
end

--- The catalog text of the database conn is connected to (see the top of
-- this file), read under the pinned output settings (J.pinned).
function J.catalog(conn) return J.pinned(conn, catalog) end

--- The rows of the database conn is connected to: {["schema.table"] =
-- checksum of its rows, ["seq schema.seq"] = "last_value/is_called",
-- ["lo OID"] = "owner md5"}, read under the pinned output settings (J.pinned).
local function contents(conn)
  local out = {}
  for _, t in ipairs(conn:query([[SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND ]] .. USER_NS .. " ORDER BY 1")) do
    out[t.name] = conn:value(string.format(
      [[SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE "C")), 'empty') FROM %s t]], t.name))
  end
  for _, s in ipairs(conn:query([[SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' ORDER BY 1]])) do
    local r = conn:query(string.format("SELECT last_value, is_called FROM %s", s.name))[1]
    out["seq " .. s.name] = r.last_value .. "/" .. tostring(r.is_called)
  end
  for _, lo in ipairs(conn:query([[SELECT m.oid::text AS oid, pg_get_userbyid(m.lomowner) AS owner,
      md5(lo_get(m.oid)) AS md5 FROM pg_largeobject_metadata m ORDER BY m.oid]])) do
    out["lo " .. lo.oid] = lo.owner .. " " .. lo.md5
  end
  return out
end

function J.contents(conn) return J.pinned(conn, contents) end

return J
