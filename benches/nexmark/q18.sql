-- Nexmark q18 (find last bid): each bidder's latest bid on each auction, by event time. A
-- Top-N of one row per (bidder, auction) without a window: each micro-batch upserts the
-- latest bid of the pairs it touched, keyed by (bidder, auction).

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q18 STORED AS BLACKHOLE LOCATION 'nexmark-q18'
OPTIONS ('merge_key' 'bidder, auction');

INSERT INTO q18
SELECT auction, bidder, price, channel, url, date_time, extra FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
  FROM bid) AS t
WHERE rank_number <= 1;
