USE ghs_src;
drop /* gh-ost */ table if exists `ghs_src`.`_t_ghc`;
create /* gh-ost */ table `ghs_src`.`_t_ghc` (
			id bigint unsigned auto_increment,
			last_update timestamp not null DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
			hint varchar(64) charset ascii not null,
			value varchar(4096) charset ascii not null,
			primary key(id),
			unique key hint_uidx(hint)
		) auto_increment=256 comment='gh-ost changelog';
insert /* gh-ost */ into `ghs_src`.`_t_ghc` (id, hint, value) values (NULLIF(2, 0), 'state', 'GhostTableMigrated') on duplicate key update last_update=NOW(), value=VALUES(value);
drop /* gh-ost */ table if exists `ghs_src`.`_t_gho`;
create /* gh-ost */ table `ghs_src`.`_t_gho` like `ghs_src`.`t`;
alter /* gh-ost */ table `ghs_src`.`_t_gho` ADD COLUMN c INT NOT NULL DEFAULT 7, ADD INDEX (v);
INSERT INTO t VALUES (201, 'app write during copy');
insert /* gh-ost */ ignore into `ghs_src`.`_t_gho` (`id`, `v`) (select `id`, `v` from `ghs_src`.`t` force index (`PRIMARY`) where ((`id` >= 1)) and ((`id` <= 201)) lock in share mode);
INSERT INTO t VALUES (202, 'written after the copy');
replace /* gh-ost */ into `ghs_src`.`_t_gho` (`id`, `v`) values (202, 'written after the copy');
UPDATE t SET v = 'updated during copy' WHERE id = 5;
update /* gh-ost */ `ghs_src`.`_t_gho` set `id`=5, `v`='updated during copy' where ((`id` = 5));
DELETE FROM t WHERE id = 6;
delete /* gh-ost */ from `ghs_src`.`_t_gho` where ((`id` = 6));
analyze /* gh-ost */ table `ghs_src`.`_t_gho`;
create /* gh-ost */ table `ghs_src`.`_t_del` (
			id int auto_increment primary key
		) engine=InnoDB comment='ghost-cut-over-sentinel';
drop /* gh-ost */ table if exists `ghs_src`.`_t_del`;
rename /* gh-ost */ table `ghs_src`.`t` to `ghs_src`.`_t_del`, `ghs_src`.`_t_gho` to `ghs_src`.`t`;
INSERT INTO t (id, v, c) VALUES (300, 'after the cut-over', 8);
UPDATE t SET c = 9 WHERE id = 1;
drop /* gh-ost */ table if exists `ghs_src`.`_t_del`;
drop /* gh-ost */ table if exists `ghs_src`.`_t_ghc`;
