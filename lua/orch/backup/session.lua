--- orch.backup.session: the fixed session settings of backups and restores.
-- A database, a role (ALTER ROLE/DATABASE ... SET) or the client's
-- environment (PGOPTIONS, PGDATESTYLE, PGCLIENTENCODING, PGTZ) can change
-- how values are printed: `DateStyle = 'SQL, DMY'` turns 2024-02-13 into
-- 13/02/2024, `extra_float_digits = 0` rounds floats, `IntervalStyle =
-- sql_standard` changes intervals. Backups and restores therefore pin every
-- setting that shapes the bytes they read or write, whatever the
-- connection inherited, the way pg_dump and pg_restore pin their own.
local S = {}

-- Settings that decide how data and catalog text come out of the server.
-- Applied transaction-locally in a backup, so the caller's session is unchanged afterwards.
local OUTPUT = {
  { "DateStyle", "ISO, MDY" },
  { "IntervalStyle", "postgres" },
  { "extra_float_digits", "3" },
  { "bytea_output", "hex" },
  { "standard_conforming_strings", "on" },
  { "quote_all_identifiers", "off" },
  { "row_security", "off" },
  { "synchronize_seqscans", "off" },
  { "statement_timeout", "0" },
  { "lock_timeout", "0" },
  { "idle_in_transaction_session_timeout", "0" },
  { "transaction_timeout", "0" },
  { "xmloption", "content" },
  { "search_path", "pg_catalog" },
}

-- Added on servers that have them.
local SINCE = { transaction_timeout = 170000 }

local function apply(conn, list, is_local)
  local num = conn:info().server_version_num
  for _, s in ipairs(list) do
    if not SINCE[s[1]] or num >= SINCE[s[1]] then
      conn:query("SELECT pg_catalog.set_config($1, $2, $3)", s[1], s[2], is_local)
    end
  end
end

--- Pin the output settings for a backup, inside its (already open)
-- transaction: set_config(..., true) lasts until COMMIT/ROLLBACK. The client
-- encoding becomes the database's own, so no character is converted.
function S.backup(conn)
  apply(conn, OUTPUT, true)
  local enc = conn:value("SELECT pg_catalog.pg_encoding_to_char(encoding) FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()")
  conn:query("SELECT pg_catalog.set_config('client_encoding', $1, true)", enc)
  return enc
end

-- A restore's session: the same output settings (so values the archive
-- holds are read as they were written), and nothing that could refuse or
-- reshape the writes. The archive's own ENCODING / STDSTRINGS / SEARCHPATH
-- entries are applied after these by the restore.
local RESTORE = {
  { "DateStyle", "ISO, MDY" },
  { "IntervalStyle", "postgres" },
  { "extra_float_digits", "3" },
  { "statement_timeout", "0" },
  { "lock_timeout", "0" },
  { "idle_in_transaction_session_timeout", "0" },
  { "transaction_timeout", "0" },
  { "check_function_bodies", "false" },
  { "xmloption", "content" },
  { "client_min_messages", "warning" },
  { "row_security", "off" },
  { "default_transaction_read_only", "off" },
  { "standard_conforming_strings", "on" },
}

--- Pin the session settings of a restore connection (for the whole session).
function S.restore(conn)
  apply(conn, RESTORE, false)
end

return S
