CREATE TABLE shipments (id integer, carrier text);
