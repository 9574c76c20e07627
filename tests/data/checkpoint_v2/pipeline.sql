-- A checkpoint written before stream-graph operator ids: one of each stateful operator
-- (tumbling, chained, hop, windowed join, interval join, keyed aggregate), stopped mid-run.
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '3000', 'rate' '50', 'seed' '11', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''', 'max_rows' '100');
CREATE EXTERNAL TABLE rolled STORED AS PARQUET LOCATION 'out/rolled';
CREATE EXTERNAL TABLE hopped STORED AS PARQUET LOCATION 'out/hopped';
CREATE EXTERNAL TABLE paired STORED AS PARQUET LOCATION 'out/paired';
CREATE EXTERNAL TABLE follow_ups STORED AS PARQUET LOCATION 'out/follow_ups';
CREATE EXTERNAL TABLE per_user STORED AS DELTA LOCATION 'out/per_user' OPTIONS ('merge_key' 'user_id');
INSERT INTO rolled
SELECT merchant, date_bin(INTERVAL '30 seconds', w) AS w30, sum(n) AS n, max(hi) AS hi
FROM (SELECT merchant, date_bin(INTERVAL '10 seconds', event_time) AS w, count(*) AS n,
             max(amount) AS hi
      FROM payments GROUP BY 1, 2)
GROUP BY 1, 2;
INSERT INTO hopped
SELECT channel, w, count(*) AS n, sum(amount) AS total
FROM (SELECT channel, amount,
             unnest(hop(event_time, INTERVAL '5 seconds', INTERVAL '15 seconds')) AS w
      FROM payments)
GROUP BY 1, 2;
INSERT INTO paired
SELECT a.w, a.merchant, a.n, b.users
FROM (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, merchant, count(*) AS n
      FROM payments GROUP BY 1, 2) a
JOIN (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, merchant,
             count(DISTINCT user_id) AS users
      FROM payments WHERE channel % 2 = 0 GROUP BY 1, 2) b
  ON a.w = b.w AND a.merchant = b.merchant;
INSERT INTO follow_ups
SELECT date_bin(INTERVAL '20 seconds', a.event_time) AS w, count(*) AS n, max(b.amount) AS top
FROM payments a JOIN payments b
  ON a.user_id = b.user_id AND b.event_time > a.event_time
 AND b.event_time <= a.event_time + INTERVAL '2 seconds'
GROUP BY 1;
INSERT INTO per_user
SELECT user_id, count(*) AS n, sum(amount) AS total
FROM payments GROUP BY 1;
