DROP SCHEMA IF EXISTS scratch_reports;
