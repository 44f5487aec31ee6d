-- Applied while Ferry is stopped, so it replays these events late: rows
-- written before and after each ALTER must still decode by the TABLE_MAP
-- of their own time, not by today's schema.
USE cdcw_src;
INSERT INTO evolving VALUES (10, 'late before');
ALTER TABLE evolving ADD COLUMN late_col VARCHAR(10) DEFAULT 'd' AFTER id;
INSERT INTO evolving VALUES (11, 'x', 'late after');
UPDATE evolving SET note = 'late update' WHERE id = 10;
ALTER TABLE evolving DROP COLUMN late_col;
INSERT INTO heap VALUES (7, 'late'), (7, 'late');
DELETE FROM heap WHERE a = 7 LIMIT 1;
UPDATE types SET vc = 'late', mi = -8388608 WHERE id = 11;
