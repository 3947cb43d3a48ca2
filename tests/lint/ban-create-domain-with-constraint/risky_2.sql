CREATE DOMAIN short_code AS text NOT NULL CHECK (length(VALUE) <= 8);
