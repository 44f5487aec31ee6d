-- Values a non-strict server stored with a warning, which a strict session
-- refuses from a plain INSERT (ENUM's error value, invalid dates under
-- ALLOW_INVALID_DATES, zero dates and zero parts), and a BLOB whose hex
-- literal would be twice its size.
DROP DATABASE IF EXISTS legacy_src;
CREATE DATABASE legacy_src;
USE legacy_src;
SET SESSION sql_mode = 'ALLOW_INVALID_DATES';
CREATE TABLE t (id INT PRIMARY KEY, e ENUM('red','blue'), s SET('x','y'),
  d DATE, dt DATETIME, z DATE, note VARCHAR(10), b LONGBLOB);
INSERT INTO t VALUES
  (1, 'not a member', 'x,nope', '2024-02-30', '2024-02-31 10:00:00', '0000-00-00', 'ok', NULL),
  (2, '', '', '0000-00-00', '0000-00-00 00:00:00', '2024-06-00', 'ok2', ''),
  (3, 'red', 'x', '2024-04-31', NULL, NULL, 'fine', REPEAT(UNHEX('00FF27'), 700000));
CREATE TABLE keyless (e ENUM('a'), n INT);
INSERT INTO keyless VALUES ('b', 1), ('a', 2), ('zz', 3);
