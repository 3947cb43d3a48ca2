CREATE TABLE tickets_seen (seq serial, seen_at timestamptz);
