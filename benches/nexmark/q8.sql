-- Nexmark q8 (monitor new users): people who opened an account and started an auction in
-- the same 10-second window: a windowed join of two windowed aggregates.

CREATE EXTERNAL TABLE person STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'person', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');
CREATE EXTERNAL TABLE auction STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'auction', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q8 STORED AS BLACKHOLE LOCATION 'nexmark-q8';

INSERT INTO q8
SELECT p.id, p.name, p.starttime
FROM (SELECT id, name, date_bin(INTERVAL '10 seconds', date_time) AS starttime
      FROM person GROUP BY id, name, 3) AS p
JOIN (SELECT seller, date_bin(INTERVAL '10 seconds', date_time) AS starttime
      FROM auction GROUP BY seller, 2) AS a
  ON p.id = a.seller AND p.starttime = a.starttime;
