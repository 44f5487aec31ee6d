-- The same with gh-ost's two-step cut-over (--cut-over=two-step), replayed
-- late: the table is renamed aside, then the ghost takes its name.
USE ghs_src;
create /* gh-ost */ table `ghs_src`.`_u_gho` like `ghs_src`.`u`;
alter /* gh-ost */ table `ghs_src`.`_u_gho` ADD COLUMN w VARCHAR(5) NOT NULL DEFAULT 'w';
insert /* gh-ost */ ignore into `ghs_src`.`_u_gho` (`id`) (select `id` from `ghs_src`.`u` force index (`PRIMARY`) where ((`id` >= 1)) and ((`id` <= 1)) lock in share mode);
INSERT INTO u VALUES (2);
replace /* gh-ost */ into `ghs_src`.`_u_gho` (`id`) values (2);
alter /* gh-ost */ table `ghs_src`.`u` rename `_u_del`;
alter /* gh-ost */ table `ghs_src`.`_u_gho` rename `u`;
INSERT INTO u VALUES (3, 'x');
drop /* gh-ost */ table if exists `ghs_src`.`_u_del`;
