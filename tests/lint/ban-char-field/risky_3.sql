ALTER TABLE airports ADD COLUMN icao "character"(4);
