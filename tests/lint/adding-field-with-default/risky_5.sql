-- pg: 10
ALTER TABLE orders ADD COLUMN priority int DEFAULT 3;
