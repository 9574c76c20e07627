-- Nexmark q5, its sliding-window half: bids per auction over the last 10 seconds, every
-- 2 seconds (event time, `date_time`), written as hop windows. The full q5 then keeps, per
-- window, the auctions with the most bids, which joins this aggregate with its own maximum:
-- a join of two streams, not streamed yet.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q5_counts STORED AS BLACKHOLE LOCATION 'nexmark-q5-counts';

INSERT INTO q5_counts
SELECT auction, w AS window_start, count(*) AS num
FROM (SELECT auction,
             unnest(hop(date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')) AS w
      FROM bid) AS b
GROUP BY auction, w;
