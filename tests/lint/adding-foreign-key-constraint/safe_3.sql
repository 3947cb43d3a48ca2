CREATE TABLE labels (id bigint PRIMARY KEY, parcel_id bigint);
ALTER TABLE labels ADD CONSTRAINT labels_parcel_fk FOREIGN KEY (parcel_id) REFERENCES parcels (id);
