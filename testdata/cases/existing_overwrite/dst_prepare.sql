-- The target already holds some of the rows, with other values: the
-- source's must win.
DROP DATABASE IF EXISTS eo_db;
CREATE DATABASE eo_db;
USE eo_db;
CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
INSERT INTO t SELECT seq * 2, CONCAT('stale ', seq) FROM seq_1_to_100;
