-- every column of every table using the domain is scanned for NULLs
ALTER DOMAIN order_ref SET NOT NULL;
