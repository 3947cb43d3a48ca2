CREATE TABLE product_drafts (sku int);
ALTER TABLE product_drafts ALTER COLUMN sku TYPE text;
