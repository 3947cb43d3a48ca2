-- "char" (quoted) is the one-byte catalog type, not char(n)
CREATE TABLE flags (kind "char", label text);
