USE ddlt_src;
INSERT INTO orders VALUES (100, 'x');
DROP TABLE other;
TRUNCATE TABLE tpl;
ALTER TABLE tpl ADD COLUMN unseen INT;
ALTER TABLE items ADD COLUMN qty INT DEFAULT 1;
INSERT INTO items VALUES (100, 100, 3);
-- A swap done by hand: orders_new (not listed) is built, then renamed in.
CREATE TABLE orders_new LIKE orders;
ALTER TABLE orders_new ADD COLUMN note VARCHAR(10) DEFAULT 'n';
INSERT INTO orders_new (id, v) SELECT id, v FROM orders;
INSERT INTO orders_new VALUES (101, 'new only', 'z');
RENAME TABLE orders TO orders_archive, orders_new TO orders;
INSERT INTO orders VALUES (102, 'after swap', 'y');
UPDATE orders SET note = 'u' WHERE id = 1;
-- Created like a table the job does not follow, and by CREATE ... SELECT.
CREATE TABLE late_like LIKE tpl;
INSERT INTO late_like (id, v) VALUES (1, 'l');
CREATE TABLE late_ctas AS SELECT * FROM staging WHERE id <= 10;
INSERT INTO late_ctas VALUES (1000, 'c');
-- Renamed into the list; moved out of it to another database.
RENAME TABLE staging TO late_staging;
INSERT INTO late_staging VALUES (2000, 's');
DELETE FROM late_staging WHERE id = 1;
RENAME TABLE items TO ddlt_other.items_moved;
INSERT INTO ddlt_other.items_moved VALUES (200, 1, 1);
