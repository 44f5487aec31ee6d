-- DDL whose result depends on the session that ran it: the statement's
-- time (CURRENT_TIMESTAMP defaults), time_zone (TIMESTAMP -> DATETIME),
-- sql_mode (a truncating MODIFY), the client charset of its text, and
-- foreign_key_checks.
DROP DATABASE IF EXISTS ddls_src;
CREATE DATABASE ddls_src;
USE ddls_src;
SET time_zone = '+00:00';
CREATE TABLE t (id INT PRIMARY KEY, ts TIMESTAMP NULL, v VARCHAR(10));
INSERT INTO t VALUES (1, '2024-01-01 10:00:00', 'abcdefghij');
