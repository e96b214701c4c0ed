-- The dashboard's database role: it can log in and read sentistream's tables, nothing else.
-- Run once per database as its owner or a superuser (README "Dashboard"); psql variables:
--   reader    the new role's name          password  its password
--   owner     the role that runs `sentistream db upgrade` (owns the tables)
--   db        the database
--   psql -v reader=sentistream_reader -v password=... -v owner=sentistream -v db=sentistream \
--        -f deploy/postgres/dashboard_reader.sql
\set ON_ERROR_STOP on
CREATE ROLE :"reader" LOGIN PASSWORD :'password';
-- Every transaction of this role is read-only unless it says otherwise; SELECT-only grants do the rest.
ALTER ROLE :"reader" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
-- Tables and views later migrations create are readable too.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
