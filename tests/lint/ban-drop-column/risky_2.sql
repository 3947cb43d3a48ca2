ALTER TYPE postal_address DROP ATTRIBUTE county;
