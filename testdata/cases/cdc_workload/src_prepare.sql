-- Tables the CDC workload changes; some rows exist before the full load.
SET SESSION sql_mode = '';
DROP DATABASE IF EXISTS cdcw_src;
CREATE DATABASE cdcw_src CHARACTER SET utf8mb4;
USE cdcw_src;

CREATE TABLE types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  d DECIMAL(65,30), f FLOAT, db DOUBLE, b1 BIT(1), b64 BIT(64), y YEAR,
  c CHAR(10), vc VARCHAR(200), t TEXT, js JSON, e ENUM('a','b','c d'), s SET('x','y','z'),
  bn BINARY(8), vb VARBINARY(100), bl BLOB,
  lat VARCHAR(50) CHARACTER SET latin1,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6),
  g GEOMETRY NULL
);
INSERT INTO types (id, vc) VALUES (1, 'before the load'), (2, 'to be deleted');

CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(40));
INSERT INTO big SELECT seq + 50000, CONCAT('pre ', seq) FROM seq_1_to_2000;

CREATE TABLE heap (a INT, b VARCHAR(10));
INSERT INTO heap VALUES (5, 'pre'), (5, 'pre');

CREATE TABLE evolving (id INT PRIMARY KEY, note VARCHAR(20));
