-- Applied while Ferry streams: every column type, a 10k-row transaction, a
-- rolled-back one, a primary-key change, a keyless delete of one of two
-- identical rows, and DDL with rows before and after it.
SET SESSION sql_mode = '';
USE cdcw_src;

INSERT INTO types VALUES
  (10, -128, 255, -8388608, 16777215, -9223372036854775808, 18446744073709551615,
   '-99999999999999999999999999999999999.999999999999999999999999999999', 3.40282e38, -2.2250738585072014e-308,
   b'1', b'1111111111111111111111111111111111111111111111111111111111111111', 2155,
   'abc', 'héllo 🚢 \'q\' \\ "dq"', 'line1\nline2\ttab', '{"a": [1, 2.5, "x"]}', 'c d', 'x,z',
   X'0001020300000000', X'00FF00', REPEAT(UNHEX('00FF7F80'), 5000),
   'Müller Ørsted', '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '-838:59:59',
   ST_GeomFromText('POINT(1.5 -2.25)')),
  (11, 127, 0, -5, 0, 9223372036854775807, 0,
   '0.000000000000000000000000000001', -1.17549e-38, 0.1,
   b'0', b'0', 1901,
   '', '', '', '[]', 'a', '',
   X'FFFFFFFFFFFFFFFF', X'', X'',
   '', '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '838:59:59',
   ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))')),
  (12, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE types SET mi = -1, ts = '1970-01-01 00:00:01.5', tm = '-00:00:00.000001', s = 'y', e = 'b',
  vc = 'updated', lat = 'àéîõü', bl = X'00' WHERE id = 1;
UPDATE types SET f = 0.1, d = 1.5, js = '{"b": null}' WHERE id = 10;
DELETE FROM types WHERE id = 2;

START TRANSACTION;
INSERT INTO big SELECT seq, CONCAT('txn ', seq) FROM seq_1_to_10000;
COMMIT;
START TRANSACTION;
INSERT INTO big VALUES (99999, 'rolled back');
UPDATE big SET v = 'rolled back' WHERE id = 1;
ROLLBACK;
UPDATE big SET id = id + 100000 WHERE id <= 10;
DELETE FROM big WHERE id BETWEEN 50001 AND 50100;

INSERT INTO heap VALUES (1, 'same'), (1, 'same'), (NULL, NULL);
DELETE FROM heap WHERE a = 1 AND b = 'same' LIMIT 1;
UPDATE heap SET b = 'one' WHERE a = 5 LIMIT 1;
DELETE FROM heap WHERE a IS NULL;

INSERT INTO evolving VALUES (1, 'before');
ALTER TABLE evolving ADD COLUMN extra INT DEFAULT 7;
INSERT INTO evolving VALUES (2, 'after', 8);
ALTER TABLE evolving MODIFY COLUMN note VARCHAR(200);
INSERT INTO evolving VALUES (3, REPEAT('long', 40), 9);
ALTER TABLE evolving DROP COLUMN extra;
UPDATE evolving SET note = 'changed' WHERE id = 1;

CREATE TABLE made_later (id INT PRIMARY KEY, v VARCHAR(10));
INSERT INTO made_later VALUES (1, 'x');
RENAME TABLE made_later TO renamed_later;
INSERT INTO renamed_later VALUES (2, 'y');
CREATE TABLE to_truncate (id INT PRIMARY KEY);
INSERT INTO to_truncate VALUES (1), (2);
TRUNCATE TABLE to_truncate;
INSERT INTO to_truncate VALUES (3);
CREATE TABLE dropped (id INT);
DROP TABLE dropped;
