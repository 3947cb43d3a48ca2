DROP TABLE tickets;
DROP FUNCTION tickets_apply_sla();
