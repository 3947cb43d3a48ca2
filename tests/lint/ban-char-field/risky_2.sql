CREATE TABLE airports (iata bpchar(3), name text);
