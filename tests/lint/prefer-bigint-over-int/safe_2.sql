CREATE TABLE shipments (id bigint, parcels integer, weight_grams int);
